//! [`RetryBudget`]: how many retries a balancer may make, as a share of its requests.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bounds automatic retries to a share of the traffic, so that when every server fails, the
/// clients do not multiply their load on it (a retry storm). After Finagle's `RetryBudget`
/// (retries at most 20% of requests, plus a small reserve) and gRPC's retry throttling
/// (gRFC A6: a token bucket that failures drain and successes refill).
///
/// The budget is a balance of tokens. It starts at `reserve`. Every request (its first
/// attempt) deposits `ratio` of a token, and the balance never goes above `max_balance`.
/// Every retry withdraws one whole token; a retry that finds less than one is not made, and
/// the request ends with its last error. So over any stretch of requests, the retries are
/// at most `ratio` of the requests plus the balance at its start: with the defaults, 20% of
/// the requests plus 10 from a fresh balancer, and never more than 100 in a burst.
///
/// Default: `ratio` 0.2 (Finagle's `percentCanRetry`), `reserve` 10 (Finagle's
/// `minRetriesPerSec`, as a count), `max_balance` 100.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    ratio: f64,
    reserve: u32,
    max_balance: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: 0.2,
            reserve: 10,
            max_balance: 100,
        }
    }
}

impl RetryBudget {
    /// A budget that deposits `ratio` of a token per request (clamped to 0..=1000, and kept
    /// to thousandths), starts with `reserve` tokens, and holds at most `max_balance` (raised
    /// to `reserve` if lower, and to 1 when `ratio` is above 0).
    pub fn new(ratio: f64, reserve: u32, max_balance: u32) -> RetryBudget {
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        // A balance capped below one token would never pay for a retry.
        let least = if ratio > 0.0 { 1 } else { 0 };
        RetryBudget {
            ratio,
            reserve,
            max_balance: max_balance.max(reserve).max(least),
        }
    }

    /// No retries at all: every request is made once.
    pub fn none() -> RetryBudget {
        RetryBudget::new(0.0, 0, 0)
    }

    /// The share of a token each request deposits.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The tokens a new balancer starts with.
    pub fn reserve(&self) -> u32 {
        self.reserve
    }

    /// The most tokens the balance holds.
    pub fn max_balance(&self) -> u32 {
        self.max_balance
    }
}

/// Thousandths of a token: the balance is kept in whole thousandths, so that five deposits
/// of 0.2 make exactly one token.
const MILLI: u64 = 1000;

/// A [`RetryBudget`]'s balance, shared by every caller of one balancer: one atomic, so
/// that a request's deposit takes no lock.
#[derive(Debug)]
pub(super) struct Balance {
    deposit: u64,
    max: u64,
    millitokens: AtomicU64,
}

impl Balance {
    pub(super) fn new(budget: RetryBudget) -> Balance {
        Balance {
            // At most 1000 tokens per request, so the product fits.
            deposit: (budget.ratio * MILLI as f64).round() as u64,
            max: u64::from(budget.max_balance) * MILLI,
            millitokens: AtomicU64::new(u64::from(budget.reserve) * MILLI),
        }
    }

    /// A request's deposit.
    pub(super) fn deposit(&self) {
        let (deposit, max) = (self.deposit, self.max);
        // Never fails: the closure always returns Some.
        let _ = self
            .millitokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + deposit).min(max))
            });
    }

    /// Takes one token for a retry; false (and nothing taken) when there is less than one.
    pub(super) fn withdraw(&self) -> bool {
        self.millitokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                t.checked_sub(MILLI)
            })
            .is_ok()
    }

    /// The tokens now.
    pub(super) fn tokens(&self) -> f64 {
        self.millitokens.load(Ordering::Relaxed) as f64 / MILLI as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_the_reserve_plus_the_ratio_of_requests() {
        let balance = Balance::new(RetryBudget::default());
        let mut retries = 0;
        for _ in 0..1000 {
            balance.deposit();
            // Every request wants two retries (every server is down).
            for _ in 0..2 {
                if balance.withdraw() {
                    retries += 1;
                }
            }
        }
        // 10 to start, then 0.2 per request.
        assert_eq!(retries, 10 + 200);
    }

    #[test]
    fn the_balance_never_passes_its_maximum() {
        let balance = Balance::new(RetryBudget::new(0.5, 3, 5));
        for _ in 0..100 {
            balance.deposit();
        }
        assert_eq!(balance.tokens(), 5.0);
        assert_eq!((0..10).filter(|_| balance.withdraw()).count(), 5);
    }

    #[test]
    fn no_budget_allows_no_retry() {
        let balance = Balance::new(RetryBudget::none());
        balance.deposit();
        assert!(!balance.withdraw());
    }
}
