"""The Dockerfiles under deploy/docker: pinned base images, a non-root final user, an
entry-point module and COPY sources that exist, and one Dockerfile for every tfmesh image
the manifests run."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from k8s.check.model import Problem, Resource

IMAGE_PREFIX = "tfmesh/"


def _instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for number, line in enumerate(joined.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            found.append((number, word.upper(), rest.strip()))
    return found


def check_dockerfile(path: Path, repo: Path) -> Iterator[Problem]:
    source = str(path.relative_to(repo))
    steps = _instructions(path.read_text())
    stages = [i for i, (_, word, _) in enumerate(steps) if word == "FROM"]
    for _, word, rest in steps:
        if word == "FROM":
            image = rest.split()[0]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                yield Problem(source, "FROM", image, "base image is not pinned to a version")
        if word == "COPY" and not rest.startswith("--from"):
            for item in rest.split()[:-1]:
                if not (repo / item).exists():
                    yield Problem(source, "COPY", item, "no such path in the repository")
    final = steps[stages[-1] :] if stages else []
    users = [rest for _, word, rest in final if word == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        yield Problem(source, "USER", "", "the final stage must run as a non-root user")
    entry = [rest for _, word, rest in final if word == "ENTRYPOINT"]
    module = re.search(r'"-m",\s*"([\w.]+)"', entry[-1]) if entry else None
    if module is None:
        yield Problem(source, "ENTRYPOINT", "", "must run `python -m <module>`")
    else:
        relative = Path(*module.group(1).split("."))
        if not (repo / relative.with_suffix(".py")).is_file():
            yield Problem(source, "ENTRYPOINT", module.group(1), "no such module in the repository")


def check_dockerfiles(repo: Path, resources: list[Resource]) -> list[Problem]:
    folder = repo / "deploy" / "docker"
    problems = [
        p for path in sorted(folder.glob("*.Dockerfile")) for p in check_dockerfile(path, repo)
    ]
    for resource in resources:
        for c, container in enumerate(resource.containers()):
            image = str(container.get("image", "")).rsplit(":", 1)[0]
            if image.startswith(IMAGE_PREFIX):
                dockerfile = folder / f"{image.removeprefix(IMAGE_PREFIX)}.Dockerfile"
                if not dockerfile.is_file():
                    problems.append(
                        Problem(
                            resource.source,
                            resource.ref,
                            f"spec.template.spec.containers[{c}].image",
                            f"no {dockerfile.relative_to(repo)} builds {image}",
                        )
                    )
    return problems
