//! JSON that reads well by hand: objects one key per line, arrays of numbers, strings and
//! short arrays on one line. The output is ordinary JSON (serde_json reads it back).

use serde_json::Value;

fn inline(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().all(|x| {
            !x.is_object()
                && (!x.is_array() || x.as_array().is_some_and(|y| y.iter().all(|z| !z.is_object() && !z.is_array())))
        }),
        Value::Object(o) => o.is_empty(),
        _ => true,
    }
}

fn write(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            out.push_str("{\n");
            for (i, (k, x)) in o.iter().enumerate() {
                out.push_str(&format!("{}{}: ", "  ".repeat(indent + 1), Value::String(k.clone())));
                write(out, x, indent + 1);
                out.push_str(if i + 1 < o.len() { ",\n" } else { "\n" });
            }
            out.push_str(&format!("{}}}", "  ".repeat(indent)));
        }
        Value::Array(a) if !inline(v) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                out.push_str(&"  ".repeat(indent + 1));
                write(out, x, indent + 1);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push_str(&format!("{}]", "  ".repeat(indent)));
        }
        _ => out.push_str(&serde_json::to_string(v).expect("a value serializes")),
    }
}

/// Pretty JSON with compact arrays.
pub(crate) fn pretty<T: serde::Serialize>(x: &T) -> String {
    let v = serde_json::to_value(x).expect("serializable");
    let mut s = String::new();
    write(&mut s, &v, 0);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_arrays_and_round_trip() {
        let v: Value =
            serde_json::from_str(r#"{"a":[1,2,3],"b":{"c":["R","S(1)"],"d":[[1,2],[3,4]]},"e":[{"x":1}]}"#).unwrap();
        let s = pretty(&v);
        assert!(s.contains("\"a\": [1,2,3]"));
        assert!(s.contains("\"d\": [[1,2],[3,4]]"));
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }
}
