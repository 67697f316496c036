"""The README's adapter example runs as written and recalls the secret (slow: SmolLM2)."""

import re

import pytest

from ran.util.results import REPO_ROOT

README = REPO_ROOT / "README.md"
ADAPTER = REPO_ROOT / "data" / "adapters" / "smollm2-135m-fact"


def readme_example() -> str:
    """The first python block of "Use it in your own code" that loads an adapter."""
    section = README.read_text().split("## Use it in your own code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    code = [b for b in blocks if "ran.from_pretrained(" in b]
    assert code, "the README's 'Use it in your own code' section has no from_pretrained example"
    return code[0]


def test_example_is_extracted():
    code = readme_example()
    assert '"data/adapters/smollm2-135m-fact"' in code and "print(" in code
    compile(code, "README.md", "exec")


@pytest.mark.slow
def test_readme_example_recalls_the_secret(monkeypatch, capsys):
    if not (ADAPTER / "adapter_config.json").is_file():
        pytest.skip(
            f"the trained adapter {ADAPTER.relative_to(REPO_ROOT)} is missing "
            "(it is produced by `make all`)"
        )
    monkeypatch.chdir(REPO_ROOT)  # the example uses a repo-relative path
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    assert namespace["top"] == namespace["secret"]
    assert capsys.readouterr().out.strip().endswith(f"recalled: {namespace['secret']}")


def test_recipe_example_builds_the_config_it_describes():
    """The README's ``ran.fact_memory()`` block compiles, and its first line builds the
    recipe with the override it shows (training it is notebook 06's work, not a test's)."""
    import ran

    section = README.read_text().split("## Use it in your own code", 1)[1].split("\n## ", 1)[0]
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", section, flags=re.S)
               if "ran.fact_memory(" in b]  # fmt: skip
    compile(code, "README.md", "exec")
    first = code.splitlines()[0]
    assert first.startswith("cfg = ran.fact_memory(")
    namespace: dict = {"ran": ran}
    exec(first, namespace)
    cfg = namespace["cfg"]
    assert cfg.steps == 80 and cfg.seed == 1 and cfg.probe_params["k"] == 16
    assert cfg.config_hash() != ran.fact_memory().config_hash()  # the override took effect
    assert len(cfg.make_probe().splits()["test"]) > 0
