//! The README and every page of `docs/` stay readable and link true.
//!
//! - Sentences average fewer than 24 words, and no paragraph is over 150 words.
//! - Every relative link names a file or folder of the repository.
//! - Nothing links to or mentions the team's folder beside the repository ([`OUTSIDE`]).
//! - The README, the front door, is at most 250 lines; BENCHMARKS.md, the results, at most 300.
//!
//! What counts, as Markdown is read here:
//!
//! - A paragraph is a run of non-blank lines outside code fences that are not headings (`#`),
//!   table rows (`|`), block quotes (`>`) or HTML (`<`). Each list item (`-`, `*`, `+`, `1.`) is a
//!   paragraph of its own, with its continuation lines.
//! - A sentence ends at `.`, `!` or `?` followed by whitespace or the end of the paragraph.
//! - A word is a whitespace-separated token, so an inline code span counts one word per token.

use std::path::{Path, PathBuf};

/// Mean words a sentence must stay under.
const MAX_MEAN_WORDS: f64 = 24.0;
/// Most words a paragraph may have.
const MAX_PARAGRAPH_WORDS: usize = 150;
/// Most lines the README may have.
const MAX_README_LINES: usize = 250;
/// Most lines BENCHMARKS.md may have: the results, with their history in docs/performance.md.
const MAX_BENCHMARKS_LINES: usize = 300;
/// A path outside the repository that no page may name; spelled in two pieces so that this
/// file does not name it either.
const OUTSIDE: &str = concat!("..", "/shared");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace root")
}

/// The README and every `docs/*.md`, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let root = root();
    let mut paths = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("a docs/ folder")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (p, text)
        })
        .collect()
}

/// A list item's text without its marker (`- `, `* `, `+ `, `12. `), or `None`.
fn list_item(line: &str) -> Option<&str> {
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    let rest = if digits > 0 {
        line[digits..].strip_prefix('.')?
    } else {
        line.strip_prefix(['-', '*', '+'])?
    };
    let mut chars = rest.chars();
    chars
        .next()
        .filter(|c| c.is_whitespace())
        .map(|_| chars.as_str())
}

/// The paragraphs of a Markdown text, each joined into one line.
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut fenced = false;
    let flush = |current: &mut Vec<&str>, out: &mut Vec<String>| {
        if !current.is_empty() {
            out.push(current.join(" "));
            current.clear();
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            flush(&mut current, &mut out);
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if line.is_empty() || line.starts_with(['#', '|', '>', '<']) {
            flush(&mut current, &mut out);
            continue;
        }
        match list_item(line) {
            Some(item) => {
                flush(&mut current, &mut out);
                current.push(item);
            }
            None => current.push(line),
        }
    }
    flush(&mut current, &mut out);
    out
}

/// How many sentences a paragraph has: at least one.
fn sentences(paragraph: &str) -> usize {
    let mut count = 0;
    let mut current = String::new();
    let mut chars = paragraph.chars().peekable();
    while let Some(c) = chars.next() {
        let ends = matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|n| n.is_whitespace());
        if ends {
            count += usize::from(!current.trim().is_empty());
            current.clear();
        } else {
            current.push(c);
        }
    }
    count += usize::from(!current.trim().is_empty());
    count.max(1)
}

#[derive(Debug, PartialEq)]
struct Metrics {
    words: usize,
    sentences: usize,
    longest_paragraph: usize,
}

impl Metrics {
    fn of(text: &str) -> Self {
        let mut m = Metrics {
            words: 0,
            sentences: 0,
            longest_paragraph: 0,
        };
        for p in paragraphs(text) {
            let words = p.split_whitespace().count();
            m.words += words;
            m.sentences += sentences(&p);
            m.longest_paragraph = m.longest_paragraph.max(words);
        }
        m
    }

    fn mean(&self) -> f64 {
        if self.sentences == 0 {
            0.0
        } else {
            self.words as f64 / self.sentences as f64
        }
    }

    /// What breaks the rules, if anything.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.mean() >= MAX_MEAN_WORDS {
            out.push(format!(
                "{:.1} words a sentence on average (under {MAX_MEAN_WORDS} wanted): split long \
                 sentences, or make a list",
                self.mean()
            ));
        }
        if self.longest_paragraph > MAX_PARAGRAPH_WORDS {
            out.push(format!(
                "a paragraph of {} words (at most {MAX_PARAGRAPH_WORDS}): split it",
                self.longest_paragraph
            ));
        }
        out
    }
}

/// The prose of a Markdown text outside code: fenced blocks dropped, and inline code spans
/// dropped from each paragraph (a span may wrap onto the next line, never past a blank one).
fn prose_outside_code(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut chunks = vec![String::new()];
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            chunks.push(String::new());
            continue;
        }
        if fenced {
            continue;
        }
        if line.trim().is_empty() {
            chunks.push(String::new());
        } else if let Some(chunk) = chunks.last_mut() {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    chunks
        .iter()
        .map(|c| c.split('`').step_by(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// The targets of the links of a Markdown text: inline links and images (`[text](target)`),
/// and reference definitions (`[name]: target`). Links inside code are not links.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for chunk in prose_outside_code(text) {
        let mut rest = chunk.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or_default();
            targets.push(target.trim_matches(['<', '>']).to_owned());
            rest = &rest[end..];
        }
        for line in chunk.lines() {
            if let Some((label, target)) = line.trim_start().split_once("]: ")
                && label.starts_with('[')
                && !label.contains(']')
            {
                let target = target.split_whitespace().next().unwrap_or_default();
                targets.push(target.trim_matches(['<', '>']).to_owned());
            }
        }
    }
    targets
}

/// The path part of a relative link target, or `None` for an address, a mail link or an anchor
/// on the same page.
fn relative_path(target: &str) -> Option<&str> {
    if target.is_empty() || target.starts_with('#') || target.contains("://") {
        return None;
    }
    if target.starts_with("mailto:") {
        return None;
    }
    let path = target.split(['#', '?']).next().unwrap_or_default();
    (!path.is_empty()).then_some(path)
}

/// What is wrong with the links of `text`, a page at `page` in the repository at `root`.
fn link_problems(root: &Path, page: &Path, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    if text.contains(OUTSIDE) {
        out.push(format!(
            "mentions {OUTSIDE}, which is outside the repository"
        ));
    }
    let dir = page.parent().unwrap_or(root);
    for target in link_targets(text) {
        let Some(path) = relative_path(&target) else {
            continue;
        };
        let resolved = if let Some(from_root) = path.strip_prefix('/') {
            root.join(from_root)
        } else {
            dir.join(path)
        };
        match resolved.canonicalize() {
            Ok(found) if found.starts_with(root) => {}
            Ok(found) => out.push(format!(
                "links to {target}, which is outside the repository ({})",
                found.display()
            )),
            Err(_) => out.push(format!("links to {target}, which does not exist")),
        }
    }
    out
}

/// A page's path from the workspace root, for messages.
fn shown(root: &Path, page: &Path) -> String {
    page.strip_prefix(root)
        .unwrap_or(page)
        .display()
        .to_string()
}

/// Fails when `page` has more than `max` lines, saying `what to do`.
fn assert_at_most_lines(page: &str, max: usize, what_to_do: &str) {
    let text = std::fs::read_to_string(root().join(page)).expect(page);
    let lines = text.lines().count();
    assert!(
        lines <= max,
        "{page} has {lines} lines (at most {max}): {what_to_do}"
    );
}

#[test]
fn the_readme_is_at_most_250_lines() {
    assert_at_most_lines(
        "README.md",
        MAX_README_LINES,
        "it is the front door; move detail into a page of docs/ and link it",
    );
}

#[test]
fn the_benchmark_results_are_at_most_300_lines() {
    assert_at_most_lines(
        "BENCHMARKS.md",
        MAX_BENCHMARKS_LINES,
        "keep the results; what profiling taught goes to docs/performance.md",
    );
}

#[test]
fn every_page_has_short_sentences_and_paragraphs() {
    let root = root();
    let pages = pages();
    assert!(pages.len() > 1, "README.md and docs/*.md");
    let problems: Vec<String> = pages
        .iter()
        .flat_map(|(page, text)| {
            Metrics::of(text)
                .problems()
                .into_iter()
                .map(|p| format!("{}: {p}", shown(&root, page)))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_relative_link_names_a_file_of_the_repository() {
    let root = root();
    let problems: Vec<String> = pages()
        .iter()
        .flat_map(|(page, text)| {
            link_problems(&root, page, text)
                .into_iter()
                .map(|p| format!("{}: {p}", shown(&root, page)))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_rules_read_markdown_as_documented() {
    let text = "# Title\n\nOne. Two! Three? e.g.x\n\n```sh\nnot prose. at all.\n```\n\n\
        - an item\n  continued. Here\n- another\n\n| a | table. |\n> a quote.\n<br>\n";
    assert_eq!(
        paragraphs(text),
        [
            "One. Two! Three? e.g.x",
            "an item continued. Here",
            "another"
        ]
    );
    assert_eq!(sentences("One. Two! Three? e.g.x"), 4);
    assert_eq!(sentences("no stop at all"), 1);
    assert_eq!(sentences("ends here.  Then... more."), 3);
    assert_eq!(
        Metrics::of(text),
        Metrics {
            words: 9,
            sentences: 7,
            longest_paragraph: 4,
        }
    );
    assert_eq!(list_item("12. twelve"), Some("twelve"));
    assert_eq!(list_item("-dash"), None);
    assert_eq!(list_item("1.5 is a number"), None);

    let long = vec!["word"; 151].join(" ");
    assert_eq!(
        Metrics::of(&long).problems().len(),
        2,
        "151 words, one sentence"
    );
    let short = vec!["Four words a sentence."; 30].join(" ");
    assert!(Metrics::of(&short).problems().is_empty());

    let links = "See [a](docs/a.md#part), ![img](b.png \"title\") and [web](https://x.org).\n\
        Code is not a link: `[c](c.md)`, nor\n```\n[d](d.md)\n```\n[e]: <e.md>\n[f](#here)\n";
    assert_eq!(
        link_targets(links),
        ["docs/a.md#part", "b.png", "https://x.org", "#here", "e.md"]
    );
    assert_eq!(relative_path("docs/a.md#part"), Some("docs/a.md"));
    assert_eq!(relative_path("#here"), None);
    assert_eq!(relative_path("https://x.org/a.md"), None);
}

#[test]
fn the_link_check_catches_missing_files_and_the_outside() {
    let root = root();
    let page = root.join("docs").join("page.md");
    assert!(
        link_problems(
            &root,
            &page,
            "[r](../README.md#run), [d](deploy.md), [x](https://x.org/none.md)"
        )
        .is_empty()
    );
    let missing = link_problems(&root, &page, "[gone](gone.md)");
    assert!(missing[0].contains("gone.md"), "{missing:?}");
    let outside = link_problems(&root, &page, "[up](../../)");
    assert!(outside[0].contains("outside"), "{outside:?}");
    let mentioned = link_problems(&root, &page, &format!("the contract in `{OUTSIDE}/API.md`"));
    assert!(mentioned[0].contains(OUTSIDE), "{mentioned:?}");
}
