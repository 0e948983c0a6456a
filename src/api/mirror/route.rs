//! Which Hub route a mirror request names, read from the raw path: repo ids
//! have one `/` or none, and a revision such as `refs/pr/1` arrives as one
//! percent-encoded segment (`refs%2Fpr%2F1`), so the path is split on `/`
//! first and each segment decoded after. Empty and dot segments name no
//! route: nothing here ever becomes a file system path.

use percent_encoding::percent_decode_str;

use crate::store::Source;

/// The three endpoint roots (`/mirror/{root}`) and the source each serves.
pub fn root_source(root: &str) -> Option<Source> {
    match root {
        "huggingface" => Some(Source::Huggingface),
        "github" => Some(Source::Github),
        "local" => Some(Source::Local),
        _ => None,
    }
}

/// A request under one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubRoute {
    /// `GET /api/models/{repo_id}[/revision/{revision}]`: the model info.
    Info { repo_id: String, revision: String },
    /// `GET /api/models/{repo_id}/tree/{revision}[/{folder}]`: the files.
    Tree {
        repo_id: String,
        revision: String,
        folder: String,
    },
    /// `HEAD`/`GET /{repo_id}/resolve/{revision}/{path}`: one file.
    Resolve {
        repo_id: String,
        revision: String,
        path: String,
    },
    /// `GET /api/agent-harnesses`, which `huggingface_hub` asks once a process.
    AgentHarnesses,
}

/// The revision a route without one means, as on the Hub.
pub const DEFAULT_REVISION: &str = "main";

/// Reads `{root}/…` (the path after `/mirror/`); `None` when it names no route.
pub fn parse(raw_path: &str) -> Option<(Source, HubRoute)> {
    let segments = raw_path
        .trim_start_matches('/')
        .split('/')
        .map(|s| {
            let decoded = percent_decode_str(s).decode_utf8().ok()?;
            let usable = !decoded.is_empty() && decoded != "." && decoded != "..";
            usable.then(|| decoded.into_owned())
        })
        .collect::<Option<Vec<String>>>()?;
    let (root, rest) = segments.split_first()?;
    let source = root_source(root)?;
    let route = match rest {
        [api, what] if api == "api" && what == "agent-harnesses" => HubRoute::AgentHarnesses,
        [api, models, rest @ ..] if api == "api" && models == "models" => model_api(rest)?,
        _ => resolve(rest)?,
    };
    Some((source, route))
}

/// The segments after `api/models/`.
fn model_api(rest: &[String]) -> Option<HubRoute> {
    // A repo id of two segments wins where both readings fit.
    let (repo_id, after) = [2, 1]
        .into_iter()
        .filter(|&n| n <= rest.len())
        .map(|n| (rest[..n].join("/"), &rest[n..]))
        .find(|(_, after)| after.is_empty() || is_model_api_verb(&after[0]))?;
    match after {
        [] => Some(HubRoute::Info {
            repo_id,
            revision: DEFAULT_REVISION.to_string(),
        }),
        [verb, revision] if verb == "revision" => Some(HubRoute::Info {
            repo_id,
            revision: revision.clone(),
        }),
        [verb, revision, folder @ ..] if verb == "tree" => Some(HubRoute::Tree {
            repo_id,
            revision: revision.clone(),
            folder: folder.join("/"),
        }),
        _ => None,
    }
}

fn is_model_api_verb(segment: &str) -> bool {
    segment == "revision" || segment == "tree"
}

/// `{repo_id}/resolve/{revision}/{path}`.
fn resolve(rest: &[String]) -> Option<HubRoute> {
    let at = [1, 2]
        .into_iter()
        .rev()
        .find(|&n| rest.len() > n + 2 && rest[n] == "resolve")?;
    Some(HubRoute::Resolve {
        repo_id: rest[..at].join("/"),
        revision: rest[at + 1].clone(),
        path: rest[at + 2..].join("/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Option<HubRoute> {
        parse(path).map(|(_, route)| route)
    }

    fn info(repo_id: &str, revision: &str) -> Option<HubRoute> {
        Some(HubRoute::Info {
            repo_id: repo_id.into(),
            revision: revision.into(),
        })
    }

    #[test]
    fn model_info_with_and_without_a_namespace_or_revision() {
        assert_eq!(
            route("huggingface/api/models/acme/bert"),
            info("acme/bert", "main")
        );
        assert_eq!(route("huggingface/api/models/gpt2"), info("gpt2", "main"));
        assert_eq!(
            route("huggingface/api/models/acme/bert/revision/v1.0"),
            info("acme/bert", "v1.0")
        );
        assert_eq!(
            route("huggingface/api/models/gpt2/revision/v1.0"),
            info("gpt2", "v1.0")
        );
        // A revision with slashes is one encoded segment.
        assert_eq!(
            route("github/api/models/acme/bert/revision/refs%2Fpr%2F1"),
            info("acme/bert", "refs/pr/1")
        );
    }

    #[test]
    fn tree_listing_with_an_optional_folder() {
        assert_eq!(
            route("local/api/models/local/bert/tree/main"),
            Some(HubRoute::Tree {
                repo_id: "local/bert".into(),
                revision: "main".into(),
                folder: String::new(),
            })
        );
        assert_eq!(
            route("huggingface/api/models/gpt2/tree/abc/onnx/fp16"),
            Some(HubRoute::Tree {
                repo_id: "gpt2".into(),
                revision: "abc".into(),
                folder: "onnx/fp16".into(),
            })
        );
    }

    #[test]
    fn resolve_with_nested_paths() {
        assert_eq!(
            route("huggingface/acme/bert/resolve/main/onnx/model%20v2.onnx"),
            Some(HubRoute::Resolve {
                repo_id: "acme/bert".into(),
                revision: "main".into(),
                path: "onnx/model v2.onnx".into(),
            })
        );
        assert_eq!(
            route("huggingface/gpt2/resolve/refs%2Fpr%2F1/config.json"),
            Some(HubRoute::Resolve {
                repo_id: "gpt2".into(),
                revision: "refs/pr/1".into(),
                path: "config.json".into(),
            })
        );
    }

    #[test]
    fn the_roots_name_their_sources() {
        assert_eq!(
            parse("github/api/agent-harnesses"),
            Some((Source::Github, HubRoute::AgentHarnesses))
        );
        assert_eq!(parse("gitlab/api/models/a/b"), None);
    }

    #[test]
    fn empty_dot_and_undecodable_segments_name_no_route() {
        for path in [
            "",
            "huggingface",
            "huggingface/acme/bert/resolve/main/../config.json",
            "huggingface/acme/bert/resolve/main/%2E%2E/config.json",
            "huggingface/acme/bert/resolve/main/./config.json",
            "huggingface/acme//bert/resolve/main/config.json",
            "huggingface/acme/bert/resolve/main/",
            "huggingface/acme/bert/resolve/main/%FF.json",
            "huggingface/acme/bert/resolve/main",
            "huggingface/api/models/acme/bert/blob/main",
            "huggingface/api/models/a/b/c",
            "huggingface/a/b/c/resolve/main/x",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }
}
