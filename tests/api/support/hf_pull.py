"""The real huggingface_hub pulling from HF_ENDPOINT, for tests/api/mirror.rs.

Run in the pinned venv (tests/api/support/hf_client.rs) with HF_ENDPOINT,
HF_HUB_CACHE and HF_HOME set by the test. Prints one JSON line:

  snapshot REPO_ID REVISION        {"folder": snapshot_download(...)}
  file REPO_ID REVISION FILENAME   {"path": hf_hub_download(...)}
  error REPO_ID REVISION FILENAME  {"raised": [the exception's classes, most
                                   derived first], or [] if none was raised}
"""

import json
import sys


def main():
    command, repo_id, revision, *rest = sys.argv[1:]
    from huggingface_hub import hf_hub_download, snapshot_download

    if command == "snapshot":
        print(json.dumps({"folder": snapshot_download(repo_id, revision=revision)}))
    elif command == "file":
        print(json.dumps({"path": hf_hub_download(repo_id, rest[0], revision=revision)}))
    elif command == "error":
        try:
            hf_hub_download(repo_id, rest[0], revision=revision)
            raised = []
        except Exception as e:  # the classes are what the test checks
            raised = [c.__name__ for c in type(e).__mro__]
        print(json.dumps({"raised": raised}))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
