//! The client core's rules, byte by byte: frames in, frames out, the time passed in.

use super::*;

#[test]
fn deadlines_round_up_to_whole_milliseconds_and_never_to_zero() {
    assert_eq!(deadline_ms(Duration::from_millis(1500)), 1500);
    assert_eq!(deadline_ms(Duration::from_micros(1500)), 2);
    assert_eq!(
        deadline_ms(Duration::from_micros(300)),
        1,
        "not 0, which means none"
    );
    assert_eq!(
        deadline_ms(Duration::ZERO),
        1,
        "already passed: 1, not none"
    );
    assert_eq!(deadline_ms(Duration::from_secs(u64::MAX)), u32::MAX);
}
