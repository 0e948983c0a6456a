//! The rules on the names a remote upload is given — a Hugging Face repo
//! id, a GitHub owner and repository name, a git revision — and on the
//! globs of `allow_patterns`. Each rule is regular expressions and a length
//! limit: the service checks a request with them, and the OpenAPI document
//! states the same expressions as the field's `pattern` (`api::strict`), so
//! a generated client refuses exactly what the service would refuse.
//!
//! The expressions are written in the syntax that Rust's `regex`, ECMA-262
//! (JSON Schema's `pattern`) and Python's `re` (which schemathesis draws
//! examples from) read alike: anchored with `^…$`, ASCII classes spelled
//! out, no lookaround, no `\d` or `\w`. A rule that one expression cannot
//! say is a conjunction of several. This module knows nothing of HTTP.

use std::sync::OnceLock;

use regex::Regex;

/// Text that matches every expression of `patterns` and has at most
/// `max_length` characters.
#[derive(Debug)]
pub struct TextRule {
    patterns: &'static [&'static str],
    max_length: Option<usize>,
    compiled: OnceLock<Vec<Regex>>,
}

impl TextRule {
    pub const fn new(patterns: &'static [&'static str], max_length: Option<usize>) -> Self {
        Self {
            patterns,
            max_length,
            compiled: OnceLock::new(),
        }
    }

    /// The expressions, the first one being the schema's `pattern`.
    pub fn patterns(&self) -> &'static [&'static str] {
        self.patterns
    }

    /// The most characters the text may have (the schema's `maxLength`),
    /// where the expressions do not already bound it.
    pub fn max_length(&self) -> Option<usize> {
        self.max_length
    }

    pub fn accepts(&self, text: &str) -> bool {
        let compiled = self.compiled.get_or_init(|| {
            self.patterns
                .iter()
                .map(|p| Regex::new(p).expect("the name rules are valid expressions"))
                .collect()
        });
        self.max_length
            .is_none_or(|max| text.chars().count() <= max)
            && compiled.iter().all(|re| re.is_match(text))
    }
}

/// A GitHub login: letters, digits and `-`, 1–39 characters, not starting
/// with `-`.
pub static GITHUB_OWNER: TextRule = TextRule::new(&["^[A-Za-z0-9][A-Za-z0-9-]{0,38}$"], Some(39));

/// A GitHub repository name: letters, digits, `.`, `_` and `-`, 1–100
/// characters, not `.` or `..` (the three branches: no leading dot, one
/// leading dot, two leading dots).
pub static GITHUB_REPO_NAME: TextRule = TextRule::new(
    &[concat!(
        r"^(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}",
        r"|\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,98}",
        r"|\.\.[A-Za-z0-9._-]{1,98})$"
    )],
    Some(100),
);

/// A Hugging Face repo id: an optional `namespace/` then a name, each of
/// `[A-Za-z0-9_.-]`, 1–96 characters, no `--` or `..`, not starting or
/// ending with `-` or `.`. The first expression says the shape of a part:
/// runs of `[A-Za-z0-9_]` joined by `-` and `.` alternating (`-.-` is
/// allowed, `--` is not); the second its length, which the first cannot
/// count. Both parts at their longest make 193 characters.
pub static HF_REPO_ID: TextRule = TextRule::new(
    &[
        concat!(
            r"^(?:[A-Za-z0-9_]+(?:(?:-(?:\.-)*\.?|\.(?:-\.)*-?)[A-Za-z0-9_]+)*/)?",
            r"[A-Za-z0-9_]+(?:(?:-(?:\.-)*\.?|\.(?:-\.)*-?)[A-Za-z0-9_]+)*$"
        ),
        r"^[A-Za-z0-9_.-]{1,96}(?:/[A-Za-z0-9_.-]{1,96})?$",
    ],
    Some(193),
);

/// A branch, tag or commit, as a Hugging Face or GitHub upload names it:
/// components of `[A-Za-z0-9_-]` and dots joined by `/`; a component does
/// not start or end with a dot, holds no `..` and does not end in `.lock`;
/// at most 255 characters. A commit sha is one such component. This is a
/// part of what git accepts as a ref name (no spaces, `~^:?*[\`, control
/// characters, `@{` or non-ASCII letters), so every revision it lets
/// through is one git and the hubs can resolve. Empty means `main`.
///
/// A component: runs of `[A-Za-z0-9_-]` joined by single dots, whose last
/// run, when a dot comes before it, is not `lock` (spelled out by length:
/// 1–3, 5 or more, or 4 characters that differ from `lock` somewhere).
pub static REVISION: TextRule = TextRule::new(
    &[concat!(
        r"^(?:",
        r"[A-Za-z0-9_-]+(?:(?:\.[A-Za-z0-9_-]+)*\.",
        r"(?:[A-Za-z0-9_-]{1,3}|[A-Za-z0-9_-]{5,}|[A-Za-km-z0-9_-][A-Za-z0-9_-]{3}",
        r"|l[A-Za-np-z0-9_-][A-Za-z0-9_-]{2}|lo[A-Zabd-z0-9_-][A-Za-z0-9_-]|loc[A-Za-jl-z0-9_-]))?",
        r"(?:/[A-Za-z0-9_-]+(?:(?:\.[A-Za-z0-9_-]+)*\.",
        r"(?:[A-Za-z0-9_-]{1,3}|[A-Za-z0-9_-]{5,}|[A-Za-km-z0-9_-][A-Za-z0-9_-]{3}",
        r"|l[A-Za-np-z0-9_-][A-Za-z0-9_-]{2}|lo[A-Zabd-z0-9_-][A-Za-z0-9_-]|loc[A-Za-jl-z0-9_-]))?)*",
        r")?$"
    )],
    Some(255),
);

/// One glob of `allow_patterns`: the characters of file paths in model
/// repositories (letters, digits, `_ . - / + @ =`) and the wildcards `*`
/// and `?`. Character classes (`[…]`) and alternatives (`{…}`) are left
/// out: a schema cannot say which of them parse, and the Hub's own
/// `allow_patterns` (Python's `fnmatch`) has no alternatives.
pub static FILE_GLOB: TextRule = TextRule::new(&["^[A-Za-z0-9_./+@=*?-]+$"], None);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The rules as API.md words them, checked character by character:
    /// what the expressions are held to.
    fn is_github_owner(s: &str) -> bool {
        (1..=39).contains(&s.len())
            && !s.starts_with('-')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    }

    fn is_github_repo_name(s: &str) -> bool {
        (1..=100).contains(&s.len())
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    }

    fn is_hf_repo_id(s: &str) -> bool {
        let parts: Vec<&str> = s.split('/').collect();
        parts.len() <= 2
            && parts.iter().all(|part| {
                (1..=96).contains(&part.len())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                    && !part.starts_with(['-', '.'])
                    && !part.ends_with(['-', '.'])
                    && !part.contains("--")
                    && !part.contains("..")
            })
    }

    fn is_revision(s: &str) -> bool {
        s.is_empty()
            || (s.len() <= 255
                && s.split('/').all(|c| {
                    !c.is_empty()
                        && c.chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
                        && !c.starts_with('.')
                        && !c.ends_with('.')
                        && !c.contains("..")
                        && !c.ends_with(".lock")
                }))
    }

    fn is_file_glob(s: &str) -> bool {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./+@=*?-".contains(c))
    }

    /// Text over `alphabet`, long enough to cross each length limit, with
    /// now and then a character from outside it.
    fn text(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
        let inside: Vec<char> = alphabet.chars().collect();
        let outside = vec![' ', '\n', '~', '^', ':', '[', '{', '\\', 'é', '\0', '@'];
        let char = prop_oneof![
            20 => proptest::sample::select(inside),
            1 => proptest::sample::select(outside),
        ];
        proptest::collection::vec(char, 0..=max).prop_map(|chars| chars.into_iter().collect())
    }

    /// Text built from `pieces` (which hold the edge cases: separators
    /// side by side, `.lock`, long runs) to reach the rare shapes that
    /// single characters seldom make.
    fn pieced(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(pieces), 0..=max)
            .prop_map(|pieces| pieces.concat())
    }

    const NAME_PIECES: &[&str] = &[
        "a",
        "Z",
        "9",
        "_",
        "-",
        ".",
        "/",
        "--",
        "..",
        "-.",
        ".-",
        "lock",
        ".lock",
        "x.lock",
        " ",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn the_owner_expression_is_the_owner_rule(s in text("aZ09-", 45)) {
            prop_assert_eq!(GITHUB_OWNER.accepts(&s), is_github_owner(&s), "{:?}", s);
        }

        #[test]
        fn the_repo_name_expression_is_the_repo_name_rule(
            s in prop_oneof![
                text("aZ09._-", 110),
                pieced(NAME_PIECES, 6),
                "[.]{0,3}[A-Za-z0-9_.-]{95,101}",
            ]
        ) {
            prop_assert_eq!(GITHUB_REPO_NAME.accepts(&s), is_github_repo_name(&s), "{:?}", s);
        }

        #[test]
        fn the_repo_id_expressions_are_the_repo_id_rule(
            s in prop_oneof![
                text("aZ09_.-/", 200),
                pieced(NAME_PIECES, 8),
                // Parts near their length limit, mostly well shaped.
                "([A-Za-z0-9_][A-Za-z0-9_.-]{92,96}[A-Za-z0-9_]/)?[A-Za-z0-9_][A-Za-z0-9_.-]{92,96}[A-Za-z0-9_]",
            ]
        ) {
            prop_assert_eq!(HF_REPO_ID.accepts(&s), is_hf_repo_id(&s), "{:?}", s);
        }

        #[test]
        fn the_revision_expression_is_the_revision_rule(
            s in prop_oneof![
                text("aZ09_.-/lock", 270),
                pieced(NAME_PIECES, 10),
                // Well-shaped revisions near the length limit.
                "[a-z0-9._-]{1,9}(/[a-z0-9._-]{1,9}){24,28}",
                "[A-Za-z0-9_-]{250,260}",
            ]
        ) {
            prop_assert_eq!(REVISION.accepts(&s), is_revision(&s), "{:?}", s);
        }

        /// The revision rule narrows git's: what it accepts, git accepts.
        #[test]
        fn every_revision_accepted_is_a_git_ref_name(
            s in prop_oneof![text("aZ09_.-/lock", 60), pieced(NAME_PIECES, 10)]
        ) {
            if !s.is_empty() && REVISION.accepts(&s) {
                prop_assert!(git2::Reference::is_valid_name(&format!("refs/heads/{s}")), "{:?}", s);
            }
        }

        #[test]
        fn the_glob_expression_is_the_glob_rule(s in text("aZ09_./+@=*?-", 20)) {
            prop_assert_eq!(FILE_GLOB.accepts(&s), is_file_glob(&s), "{:?}", s);
        }

        /// Every glob the rule accepts is one the service can compile.
        #[test]
        fn every_glob_accepted_compiles(s in text("aZ09_./+@=*?-", 20)) {
            if FILE_GLOB.accepts(&s) {
                prop_assert!(globset::Glob::new(&s).is_ok(), "{:?}", s);
            }
        }
    }

    #[test]
    fn revisions_people_use_are_accepted_and_odd_ones_refused() {
        for good in [
            "",
            "main",
            "v1.0",
            "feature/x",
            "refs/pr/1",
            "release-2.x_final",
            "lock",
            "a.locks",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(REVISION.accepts(good), "{good}");
        }
        for bad in [
            "a..b",
            "x y",
            "bad~1",
            "v1.",
            ".hidden",
            "a//b",
            "/main",
            "main/",
            "topic.lock",
            "a/b.lock/c",
            "main\n",
            "naïve",
            "a@{1}",
        ] {
            assert!(!REVISION.accepts(bad), "{bad}");
        }
        assert!(REVISION.accepts(&"a".repeat(255)) && !REVISION.accepts(&"a".repeat(256)));
    }

    #[test]
    fn each_repo_id_part_has_its_own_length_limit() {
        let name = "n".repeat(96);
        assert!(HF_REPO_ID.accepts(&name));
        assert!(HF_REPO_ID.accepts(&format!("{name}/{name}")));
        assert!(!HF_REPO_ID.accepts(&format!("a/{name}n")));
        assert!(!HF_REPO_ID.accepts(&format!("{name}n/a")));
        assert!(HF_REPO_ID.accepts("a-.-b/c.-d") && !HF_REPO_ID.accepts("a-.-/b"));
    }
}
