//! The text-format parser against a model: any tree of sections, numbers, strings and flat
//! arrays written the way LVM writes it parses back to the same tree.

use proptest::prelude::*;
use vdisk_lvm::text::{Item, Section, Value, parse};

fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_.+-]{0,8}"
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        "[ -~\n]{0,12}".prop_map(Value::Str),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        scalar(),
        prop::collection::vec(scalar(), 0..5).prop_map(Value::Array),
    ]
}

fn section() -> impl Strategy<Value = Section> {
    let leaf = prop::collection::vec((name(), value().prop_map(Item::Value)), 0..5)
        .prop_map(|items| Section { items });
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop::collection::vec(
            (
                name(),
                prop_oneof![value().prop_map(Item::Value), inner.prop_map(Item::Section)],
            ),
            0..5,
        )
        .prop_map(|items| Section { items })
    })
}

fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Number(s) => out.push_str(s),
        Value::Str(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Value::Array(a) => {
            out.push_str("[\n");
            let parts: Vec<String> = a
                .iter()
                .map(|v| {
                    let mut s = String::new();
                    write_value(v, &mut s);
                    s
                })
                .collect();
            out.push_str(&parts.join(", "));
            out.push_str("\n]");
        }
    }
}

fn write(s: &Section, depth: usize, out: &mut String) {
    for (k, item) in &s.items {
        out.push_str(&"\t".repeat(depth));
        match item {
            Item::Value(v) => {
                out.push_str(k);
                out.push_str(" = ");
                write_value(v, out);
                out.push_str("\t# a comment, \"quoted\" {\n");
            }
            Item::Section(inner) => {
                out.push_str(k);
                out.push_str(" {\n");
                write(inner, depth + 1, out);
                out.push_str(&"\t".repeat(depth));
                out.push_str("}\n");
            }
        }
    }
}

proptest! {
    #[test]
    fn any_tree_written_as_lvm_text_parses_back_to_itself(top in section()) {
        let mut text = String::new();
        write(&top, 0, &mut text);
        prop_assert_eq!(parse(text.as_bytes()).unwrap(), top);
    }

    #[test]
    fn any_bytes_parse_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse(&bytes);
    }
}
