//! Checks an environment file's text gets before the YAML parser sees it: flow collections nested too
//! deep (the parser is quadratic in them), and list items indented deeper than the item above (which
//! YAML silently joins to it). Written by hand: no YAML library reports either.

/// Refuses a list item indented deeper than the plain item above it: YAML reads it as a continuation of
/// that item (`- python=3.11` then `   - flask` is the one entry `python=3.11 - flask`), which would
/// otherwise surface as a puzzling solve error. Returns the line and column of the deeper item.
pub(crate) fn check_list_indentation(text: &str) -> Result<(), (usize, usize, String)> {
    let mut prev: Option<(usize, &str)> = None;
    // Inside a block scalar (`|`, `>`): its lines are text, whatever they look like.
    let mut block: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        if let Some(b) = block {
            if indent > b {
                continue;
            }
            block = None;
        }
        let body = content.split(" #").next().unwrap_or(content).trim_end();
        let tail = body.trim_end_matches(|c: char| c == '-' || c == '+' || c.is_ascii_digit());
        if (tail.ends_with('|') || tail.ends_with('>')) && (tail.len() == 1 || tail[..tail.len() - 1].ends_with(' ')) {
            block = Some(indent);
            prev = None;
            continue;
        }
        let item = content.strip_prefix("- ").or_else(|| (content == "-").then_some(""));
        if let (Some(_), Some((prev_indent, prev_item))) = (item, prev) {
            let plain = !prev_item.is_empty()
                && !prev_item.contains(": ")
                && !prev_item.ends_with(':')
                && !prev_item.starts_with(['"', '\'', '[', '{', '|', '>', '&', '*', '!', '-']);
            if indent > prev_indent && plain {
                return Err((
                    i + 1,
                    indent + 1,
                    format!(
                        "this list item is indented deeper than the one above it, so YAML reads the two as one entry ({:?}): start every `-` of the list in the same column",
                        format!("{prev_item} - {}", item.unwrap_or_default())
                    ),
                ));
            }
        }
        prev = item.map(|it| (indent, it.trim_end()));
    }
    Ok(())
}

/// The deepest `[`/`{` nesting envlayer parses. The YAML parser takes time quadratic in flow nesting
/// (100,000 levels: over 30 s), so deeper documents are refused before it sees them.
pub(crate) const MAX_FLOW_DEPTH: usize = 64;

/// Refuses flow collections nested deeper than [`MAX_FLOW_DEPTH`], naming the line. Quoted strings and
/// comments are skipped; the scan is approximate only in being stricter than YAML in odd corners.
pub(crate) fn check_flow_nesting(text: &str) -> Result<(), (usize, String)> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    for c in text.chars() {
        if c == '\n' {
            line += 1;
            comment = false;
        } else if comment {
        } else if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else {
            match c {
                '#' if prev.is_whitespace() => comment = true,
                '\'' | '"' if depth > 0 || prev.is_whitespace() || prev == ':' => quote = Some(c),
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err((line, format!("collections nested more than {MAX_FLOW_DEPTH} levels deep")));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        prev = c;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_item_indented_too_deep_is_named_and_valid_yaml_passes() {
        let bad = "dependencies:\n  - python=3.11\n   - flask\n";
        let (line, column, msg) = check_list_indentation(bad).unwrap_err();
        assert_eq!((line, column), (3, 4));
        assert!(msg.contains("\"python=3.11 - flask\""), "{msg}");
        for ok in [
            "dependencies:\n  - python\n  - pip:\n    - flask\n",
            "a:\n  - - x\n    - y\n",
            "envlayer:\n  labels:\n    note: |\n      - first\n        - deeper\n  install: baked\n",
            "d:\n  - x # comment\n  - >-\n     - text\n      - more\n  - y\n",
            "d:\n  - name: x\n    deps:\n      - y\n",
        ] {
            assert!(check_list_indentation(ok).is_ok(), "{ok}");
        }
    }
}
