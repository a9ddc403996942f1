//! The Prometheus text exposition format (version 0.0.4), written the way
//! `metrics-exporter-prometheus` 0.18 writes it: the same name and label
//! sanitising, escaping, unit and suffix rules, so that both give the same series.

use std::fmt::{Display, Write};

use metrics::Unit;

/// Replaces every character a metric name may not hold with `_`
/// (`[a-zA-Z_:][a-zA-Z0-9_:]*`); an empty name is `_`. (The exporter writes an
/// empty name as it is, a line that fails the whole scrape.)
pub fn sanitize_metric_name(name: &str) -> String {
    if name.is_empty() {
        return String::from("_");
    }
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            let ok =
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i != 0 && c.is_ascii_digit());
            if ok {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Replaces every character a label name may not hold with `_`
/// (`[a-zA-Z_][a-zA-Z0-9_]*`); an empty key is `_`, as an empty name.
pub fn sanitize_label_key(key: &str) -> String {
    if key.is_empty() {
        return String::from("_");
    }
    key.chars()
        .enumerate()
        .map(|(i, c)| {
            let ok = c.is_ascii_alphabetic() || c == '_' || (i != 0 && c.is_ascii_digit());
            if ok {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Escapes a label value (`\n`, `"`, `\`) or, with `is_desc`, a `# HELP` text (`\n`
/// and `\` only). A lone backslash is doubled; like the exporter, two in a row are
/// taken as one already escaped and kept, and a backslash right before a `"` is
/// dropped (the quote is escaped instead).
fn escape_into(out: &mut String, value: &str, is_desc: bool) {
    let mut previous_backslash = false;
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '"' if !is_desc => {
                previous_backslash = false;
                out.push_str("\\\"");
            }
            '\\' => {
                if previous_backslash {
                    out.push_str("\\\\");
                }
                previous_backslash = !previous_backslash;
            }
            c => {
                if previous_backslash {
                    previous_backslash = false;
                    out.push_str("\\\\");
                }
                out.push(c);
            }
        }
    }
    if previous_backslash {
        out.push_str("\\\\");
    }
}

/// Writes `name`, then the unit (unless already there; `Count` has none, `Percent` is
/// `ratio`; placed before a trailing `_sum`/`_count`/`_bucket`/`_total`), then
/// `_suffix` (unless already there).
pub fn push_metric_name(out: &mut String, name: &str, unit: Option<Unit>, suffix: Option<&str>) {
    let start = out.len();
    out.push_str(name);
    if let Some(unit) = unit {
        let unit = match unit {
            Unit::Count => "",
            Unit::Percent => "ratio",
            u => u.as_str(),
        };
        if !unit.is_empty() {
            let mut handled = false;
            for known in ["_sum", "_count", "_bucket", "_total"] {
                if out[start..].ends_with(known) {
                    let pos = out.len() - known.len();
                    if !out[start..pos].ends_with(unit) {
                        out.insert(pos, '_');
                        out.insert_str(pos + 1, unit);
                    }
                    handled = true;
                    break;
                }
            }
            if !handled && !out[start..].ends_with(unit) {
                out.push('_');
                out.push_str(unit);
            }
        }
    }
    if let Some(suffix) = suffix {
        if !out[start..].ends_with(suffix) {
            out.push('_');
            out.push_str(suffix);
        }
    }
}

/// `# HELP name text`.
pub fn write_help(
    out: &mut String,
    name: &str,
    unit: Option<Unit>,
    suffix: Option<&str>,
    desc: &str,
) {
    out.push_str("# HELP ");
    push_metric_name(out, name, unit, suffix);
    out.push(' ');
    escape_into(out, desc, true);
    out.push('\n');
}

/// `# TYPE name kind`.
pub fn write_type(
    out: &mut String,
    name: &str,
    unit: Option<Unit>,
    suffix: Option<&str>,
    kind: &str,
) {
    out.push_str("# TYPE ");
    push_metric_name(out, name, unit, suffix);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// Renders a label set once (`k1="v1",k2="v2"`, sanitised and escaped): global
/// labels first, in their order, then the key's, a key label replacing a global one
/// of the same name in place (an ordered map, as the exporter uses).
pub fn render_labels<'a>(
    global: &'a [(String, String)],
    key_labels: impl Iterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut merged: Vec<(&str, &str)> = global
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (k, v) in key_labels {
        match merged.iter_mut().find(|(mk, _)| *mk == k) {
            Some(slot) => slot.1 = v,
            None => merged.push((k, v)),
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in merged.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&sanitize_label_key(k));
        out.push_str("=\"");
        escape_into(&mut out, v, false);
        out.push('"');
    }
    out
}

/// One sample line: `name[_unit][_suffix]{labels[,extra="v"]} value`.
#[allow(clippy::too_many_arguments)]
pub fn write_sample(
    out: &mut String,
    name: &str,
    unit: Option<Unit>,
    suffix: Option<&str>,
    labels: &str,
    extra: Option<(&str, &dyn Display)>,
    value: impl Display,
) {
    push_metric_name(out, name, unit, suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        out.push_str(labels);
        if let Some((k, v)) = extra {
            if !labels.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_sanitised() {
        assert_eq!(sanitize_metric_name("1foo.bar-baz:q"), "_foo_bar_baz:q");
        assert_eq!(sanitize_metric_name("123"), "_23");
        assert_eq!(sanitize_label_key("a:b"), "a_b");
        assert_eq!(sanitize_label_key("9x"), "_x");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut s = String::new();
        escape_into(&mut s, "a\"b\\c\nd\\", false);
        assert_eq!(s, r#"a\"b\\c\nd\\"#);
        let mut s = String::new();
        escape_into(&mut s, "say \"hi\"\n", true);
        assert_eq!(s, "say \"hi\"\\n");
    }

    #[test]
    fn units_and_suffixes() {
        let name = |n: &str, u: Option<Unit>, s: Option<&str>| {
            let mut o = String::new();
            push_metric_name(&mut o, n, u, s);
            o
        };
        assert_eq!(
            name("latency", Some(Unit::Seconds), None),
            "latency_seconds"
        );
        assert_eq!(
            name("latency_seconds", Some(Unit::Seconds), None),
            "latency_seconds"
        );
        assert_eq!(
            name("req_total", Some(Unit::Bytes), None),
            "req_bytes_total"
        );
        assert_eq!(name("req", Some(Unit::Count), Some("total")), "req_total");
        assert_eq!(name("cpu", Some(Unit::Percent), None), "cpu_ratio");
        assert_eq!(
            name("lat", Some(Unit::Seconds), Some("sum")),
            "lat_seconds_sum"
        );
    }

    #[test]
    fn global_labels_are_overridden_in_place() {
        let global = vec![
            ("env".to_string(), "prod".to_string()),
            ("az".to_string(), "b".to_string()),
        ];
        let l = render_labels(&global, [("env", "dev"), ("path", "/x")].into_iter());
        assert_eq!(l, r#"env="dev",az="b",path="/x""#);
    }
}
