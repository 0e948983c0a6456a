//! The archive guard's pure rules: which entry paths are safe to extract,
//! which entries are symbolic links, and how a model name becomes its tag.
//! Nothing here extracts or writes; the checks only read names, metadata
//! and the archive's last few kilobytes.

/// `S_IFMT` and `S_IFLNK` of a unix mode, as kept in the high 16 bits of an
/// entry's external attributes.
const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;

/// The path components of an entry that is safe to extract below a folder,
/// or why it is not. `/` and `\` both separate (archives written on Windows
/// use `\`); empty and `.` components are dropped. Refused: absolute paths
/// (`/…`, `\…`, `C:…`), any `..` component, and NUL characters.
pub fn safe_entry_path(name: &str) -> Result<Vec<&str>, String> {
    if name.contains('\0') {
        return Err(format!(
            "entry '{}' has a NUL character in its path",
            name.escape_default()
        ));
    }
    if name.starts_with(['/', '\\']) || has_drive_prefix(name) {
        return Err(format!("entry '{name}' has an absolute path"));
    }
    let components: Vec<&str> = name
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if components.contains(&"..") {
        return Err(format!(
            "entry '{name}' has a '..' in its path, which could climb out of the folder it is extracted to"
        ));
    }
    Ok(components)
}

/// `C:` or `c:\…`: a Windows drive, absolute on that system.
fn has_drive_prefix(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

/// Whether an entry is a symbolic link: its unix mode, as the ZIP reader
/// reports it or as the external attributes carry it, says `S_IFLNK`.
pub fn is_symlink(unix_mode: Option<u32>, external_attributes: u32) -> bool {
    let says_link = |mode: u32| mode & S_IFMT == S_IFLNK;
    unix_mode.is_some_and(says_link) || says_link(external_attributes >> 16)
}

/// A local model's tag: its name with every character outside
/// `[A-Za-z0-9]` replaced by `_` (API.md), so the tag is always one safe
/// folder name.
pub fn model_tag(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::{Component, Path};

    use proptest::prelude::*;

    use super::*;

    /// Entry names assembled from the pieces that make paths dangerous.
    fn entry_name() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just(String::new()),
            Just("C:".to_string()),
            Just("model.bin".to_string()),
            "[a-zA-Z0-9_. :-]{1,8}",
        ];
        let separator = prop_oneof![Just("/"), Just("\\"), Just("//")];
        (
            proptest::option::of(separator.clone()),
            proptest::collection::vec((piece, separator), 1..6),
        )
            .prop_map(|(lead, parts)| {
                let mut name = lead.unwrap_or_default().to_string();
                for (piece, sep) in parts {
                    name.push_str(&piece);
                    name.push_str(sep);
                }
                name.pop();
                name
            })
    }

    proptest! {
        #[test]
        fn an_accepted_path_stays_below_its_folder(name in entry_name()) {
            if let Ok(components) = safe_entry_path(&name) {
                let base = Path::new("/data/tmp/uploads/staging");
                let mut target = base.to_path_buf();
                for component in &components {
                    prop_assert!(!component.is_empty() && *component != "." && *component != "..");
                    prop_assert!(!component.contains(['/', '\\', '\0']));
                    target.push(component);
                }
                prop_assert!(target.starts_with(base));
                prop_assert!(target
                    .strip_prefix(base)
                    .unwrap()
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))));
            }
        }

        #[test]
        fn a_climbing_or_absolute_path_is_refused(name in entry_name()) {
            let climbs = name.split(['/', '\\']).any(|c| c == "..");
            let absolute = name.starts_with(['/', '\\']) || has_drive_prefix(&name);
            if climbs || absolute {
                prop_assert!(safe_entry_path(&name).is_err(), "{name} was accepted");
            }
        }

        #[test]
        fn the_refusal_names_the_entry(name in entry_name()) {
            if let Err(reason) = safe_entry_path(&name) {
                prop_assert!(reason.contains(&name), "{reason}");
            }
        }

        #[test]
        fn a_tag_is_one_safe_folder_name_of_the_same_length(name in "\\PC{0,40}") {
            let tag = model_tag(&name);
            prop_assert_eq!(tag.chars().count(), name.chars().count());
            prop_assert!(tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            for (original, tagged) in name.chars().zip(tag.chars()) {
                if original.is_ascii_alphanumeric() {
                    prop_assert_eq!(original, tagged);
                } else {
                    prop_assert_eq!(tagged, '_');
                }
            }
            prop_assert_eq!(model_tag(&tag), tag);
        }
    }

    #[test]
    fn examples_of_the_path_rule() {
        assert_eq!(
            safe_entry_path("bert/model.bin").unwrap(),
            ["bert", "model.bin"]
        );
        assert_eq!(
            safe_entry_path("./bert//x\\y.json").unwrap(),
            ["bert", "x", "y.json"]
        );
        for bad in [
            "../../evil.json",
            "/tmp/evil.json",
            "a/../../b",
            "C:\\evil",
            "\\\\host\\x",
        ] {
            assert!(safe_entry_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn examples_of_the_tag_rule() {
        assert_eq!(model_tag("bert-base.v2"), "bert_base_v2");
        assert_eq!(model_tag("Ünïcode model"), "_n_code_model");
    }

    #[test]
    fn symlinks_are_told_from_files_and_folders() {
        assert!(is_symlink(Some(0o120_777), 0));
        assert!(is_symlink(None, 0o120_777 << 16));
        assert!(!is_symlink(Some(0o100_644), 0o100_644 << 16));
        assert!(!is_symlink(Some(0o040_755), 0o040_755 << 16));
    }
}
