"""A Python client generated from the service's /openapi.json by
openapi-python-client (pinned by .ci/interop.sh), used end to end, so a
change that breaks generated clients fails CI.

  generated_client_check.py PACKAGE_PARENT SERVICE_URL REPO_ID

With the client's own types: the model REPO_ID@main (stored earlier by
interop.sh) is deleted, uploaded again from the fake hub and followed to
DONE; the task and the model are found in their lists; and a second upload
of the same model is a typed 409 whose body is an ErrorBody with the code
MODEL_ALREADY_EXISTS.
"""

import sys
import time


def fail(message):
    sys.exit(f"FAIL: {message}")


def main():
    package_parent, base_url, repo_id = sys.argv[1:]
    sys.path.insert(0, package_parent)
    from vectorize_client import AuthenticatedClient
    from vectorize_client.api.models import delete_model, list_models
    from vectorize_client.api.tasks import get_task, list_tasks
    from vectorize_client.api.uploads import upload_huggingface
    from vectorize_client.models import ErrorBody, HuggingFaceUpload, Task, TaskStatus

    # No key is set on this service; the client sends one all the same.
    client = AuthenticatedClient(base_url=base_url, token="unused", raise_on_unexpected_status=True)
    model_tag = f"{repo_id}@main"

    stored = [m for m in list_models.sync(client=client, limit=1000).items if m.model_tag == model_tag]
    for model in stored:
        deleted = delete_model.sync_detailed(model.id, client=client)
        if deleted.status_code != 204:
            fail(f"delete_model answered {deleted.status_code}")
    print(f"ok  delete_model: {len(stored)} removed")

    body = HuggingFaceUpload(model_tag=repo_id, revision="main")
    created = upload_huggingface.sync_detailed(client=client, body=body)
    if created.status_code != 201 or not isinstance(created.parsed, Task):
        fail(f"upload_huggingface answered {created.status_code}: {created.content!r}")
    task = created.parsed
    deadline = time.time() + 60
    while task.task_status in (TaskStatus.PENDING, TaskStatus.RUNNING):
        if time.time() > deadline:
            fail(f"task {task.id} did not finish: {task}")
        time.sleep(0.1)
        task = get_task.sync(task.id, client=client)
    if task.task_status != TaskStatus.DONE:
        fail(f"task {task.id} ended {task.task_status}: {task.error_code} {task.error_msg}")
    print(f"ok  upload_huggingface -> task {task.id} DONE")

    if not any(t.id == task.id for t in list_tasks.sync(client=client, limit=1000).items):
        fail("list_tasks does not show the task")
    if not any(m.id == task.model_id for m in list_models.sync(client=client, limit=1000).items):
        fail("list_models does not show the model")
    print("ok  list_tasks and list_models show them")

    again = upload_huggingface.sync_detailed(client=client, body=body)
    if again.status_code != 409 or not isinstance(again.parsed, ErrorBody):
        fail(f"a second upload answered {again.status_code}: {again.content!r}")
    if again.parsed.code != "MODEL_ALREADY_EXISTS":
        fail(f"the 409 says {again.parsed.code}")
    print("ok  a second upload is a typed 409 MODEL_ALREADY_EXISTS")


if __name__ == "__main__":
    main()
