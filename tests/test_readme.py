"""The README's first API example runs as written (on a free port instead of 5555)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_api_example_runs(tcp_address: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README shows no Python example"
    example = blocks[0].replace("tcp://127.0.0.1:5555'}}", f"{tcp_address}'}}}}")
    assert tcp_address in example
    namespace: dict = {}
    exec(example, namespace)
    publisher = namespace["publisher"]
    publisher.join(timeout=5.0)  # the example ends by turning the switch off
    assert not publisher.is_alive()
    subscriber = namespace["subscriber"]
    assert subscriber.stats["received"] == 2


def test_the_readme_pattern_example_runs_and_keeps_the_directions_apart(
    tcp_address: str,
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 2, "the README shows no example of the patterns"
    example = blocks[1].replace("'tcp://127.0.0.1:5555'", f"'{tcp_address}'")
    assert tcp_address in example
    namespace: dict = {}
    exec(example, namespace)
    assert namespace["instruction"] == {"question": "lunch?"}
    assert namespace["report"] == {"ballot": "pizza"}  # the group's own instruction never came
    assert namespace["reports"].get() is None
    for name in ("group", "outbox"):
        assert not namespace[name].is_alive()
    namespace["reports"].close()
    namespace["inbox"].close()


def test_the_readme_request_example_runs(tcp_address: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    example = next(block for block in blocks if "bus.request(" in block)
    example = example.replace("'tcp://127.0.0.1:5555'", f"'{tcp_address}'")
    assert tcp_address in example
    namespace: dict = {}
    exec(example, namespace)
    assert namespace["answer"] == 42
    assert [answer.message for answer in namespace["answers"]] == [8]
    assert not namespace["publisher"].is_alive()


def test_the_readme_worker_pool_example_runs(tcp_address: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    [example] = [block for block in blocks if "group='resizers'" in block]
    example = example.replace("tcp://127.0.0.1:5555'}}", f"{tcp_address}'}}}}")
    assert tcp_address in example
    namespace: dict = {}
    exec(example, namespace)
    assert namespace["resized"] == sorted(f"{n}.png" for n in range(30))
    assert namespace["publisher"].stats["group_lost"] == 0
