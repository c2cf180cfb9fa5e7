//! What is printed: the method list, a response payload, an identity.

use std::io::Write;

use anyhow::{Context, Result};
use courier_rpc::admin::{MethodEntry, WhoAmI};
use courier_rpc::auth::IdentitySource;

use crate::args::Output;
use crate::encodings::{self, Encoding};

/// The methods, one per line, in aligned columns: `name  service/method  request -> response`.
pub fn method_lines(methods: &[&MethodEntry]) -> String {
    let ids: Vec<String> = methods
        .iter()
        .map(|m| format!("{}/{}", m.service, m.method))
        .collect();
    let name_width = methods.iter().map(|m| m.name.len()).max().unwrap_or(0);
    let id_width = ids.iter().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (m, id) in methods.iter().zip(&ids) {
        out.push_str(&format!(
            "{:name_width$}  {id:id_width$}  {} -> {}\n",
            m.name, m.request, m.response
        ));
    }
    out
}

/// The methods as a JSON array of `{service, method, name, request, response}`, with a final
/// newline.
pub fn method_json(methods: &[&MethodEntry]) -> String {
    let list: Vec<serde_json::Value> = methods
        .iter()
        .map(|m| {
            serde_json::json!({
                "service": m.service,
                "method": m.method,
                "name": m.name,
                "request": m.request,
                "response": m.response,
            })
        })
        .collect();
    format!("{}\n", serde_json::Value::Array(list))
}

/// Writes a response `payload` of `encoding` to `out` as `mode` says (`pretty`: indent JSON).
///
/// # Errors
/// A payload that is not a valid message of its encoding (with `Output::Auto`), naming the
/// encoding and suggesting `--output hex`; a failed write.
pub fn write_response(
    out: &mut impl Write,
    encoding: &Encoding,
    payload: &[u8],
    mode: Output,
    pretty: bool,
) -> Result<()> {
    let shown = match mode {
        Output::Raw => payload.to_vec(),
        Output::Hex => format!("{}\n", encodings::hex(payload)).into_bytes(),
        Output::Auto => encodings::render(encoding, payload, pretty).with_context(|| {
            format!("the response is not valid {encoding} (--output hex shows its bytes)")
        })?,
    };
    out.write_all(&shown)?;
    out.flush()?;
    Ok(())
}

/// An identity as one line: `anonymous`, or `NAME (token)`, `(certificate)`, `(custom)`, or
/// `(source N)` for a source byte this version does not know.
pub fn identity(who: &WhoAmI) -> String {
    if who.source_code == 0 {
        return "anonymous".to_string();
    }
    let source = match who.source() {
        Some(IdentitySource::Certificate) => "certificate".to_string(),
        Some(IdentitySource::Token) => "token".to_string(),
        Some(IdentitySource::Custom) => "custom".to_string(),
        _ => format!("source {}", who.source_code),
    };
    format!("{} ({source})", who.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(service: u16, method: u16, name: &str, request: &str, response: &str) -> MethodEntry {
        MethodEntry {
            service,
            method,
            name: name.to_string(),
            request: request.to_string(),
            response: response.to_string(),
        }
    }

    #[test]
    fn methods_are_listed_in_aligned_columns() {
        let list = [
            entry(0, 1, "admin.Stats", "empty", "utf8"),
            entry(100, 1, "calc.add", "cbor", "u32"),
        ];
        let refs: Vec<&MethodEntry> = list.iter().collect();
        assert_eq!(
            method_lines(&refs),
            "admin.Stats  0/1    empty -> utf8\ncalc.add     100/1  cbor -> u32\n"
        );
        let json: serde_json::Value = serde_json::from_str(&method_json(&refs)).unwrap();
        assert_eq!(json[1]["name"], "calc.add");
        assert_eq!(json[1]["service"], 100);
        assert_eq!(json[1]["response"], "u32");
        assert_eq!(method_lines(&[]), "");
    }

    #[test]
    fn responses_are_written_as_the_mode_says() {
        let mut out = Vec::new();
        write_response(&mut out, &Encoding::Utf8, b"hi", Output::Raw, false).unwrap();
        write_response(&mut out, &Encoding::Utf8, b"hi", Output::Hex, false).unwrap();
        write_response(&mut out, &Encoding::Utf8, b"hi", Output::Auto, false).unwrap();
        assert_eq!(out, b"hi6869\nhi\n");
        let err = write_response(
            &mut out,
            &Encoding::from_name("u16"),
            b"x",
            Output::Auto,
            false,
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "the response is not valid u16 (--output hex shows its bytes): 1 bytes, where u16 takes 2"
        );
    }

    #[test]
    fn identities() {
        let who = |source_code, name: &str| WhoAmI {
            source_code,
            name: name.to_string(),
        };
        assert_eq!(identity(&who(0, "")), "anonymous");
        assert_eq!(identity(&who(2, "alice")), "alice (token)");
        assert_eq!(identity(&who(1, "svc")), "svc (certificate)");
        assert_eq!(identity(&who(9, "x")), "x (source 9)");
    }
}
