"""The whole check: render every kustomization, validate every resource, then cross-check
each way of deploying the suite (an overlay, the training Jobs and the mesh resources that
go with it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from k8s.check.conventions import check_conventions
from k8s.check.dockerfiles import check_dockerfiles
from k8s.check.model import Catalog, Problem, Resource
from k8s.check.protos import grpc_methods
from k8s.check.references import check_all
from k8s.check.render import (
    KUSTOMIZATION,
    RenderError,
    buildable_kustomizations,
    find_kubectl,
    load_file,
    render,
)
from k8s.check.schemas import validate_all

JOBS = ("k8s/jobs/training", "k8s/jobs/training-multiworker")
MESH = ("istio/install", "istio")
# What Flagger replaces: the hand-made routing of the canaried service.
FLAGGER_OWNED = {
    ("VirtualService", "inference"),
    ("VirtualService", "inference-ingress"),
    ("DestinationRule", "inference"),
}


@dataclass(frozen=True)
class Scenario:
    """One way to deploy: kustomizations applied together, and whether the hand-staged
    inference VirtualServices (applied by hand, one at a time) belong to it."""

    name: str
    kustomizations: tuple[str, ...]
    staged_routes: bool = True
    flagger: bool = False


SCENARIOS = (
    Scenario("dev", ("k8s/overlays/dev", *JOBS, *MESH)),
    Scenario("production", ("k8s/overlays/production", *JOBS, *MESH)),
    Scenario(
        "progressive",
        ("k8s/overlays/progressive", *JOBS, *MESH, "istio/flagger"),
        staged_routes=False,
        flagger=True,
    ),
)


def _listed_files(directory: Path) -> set[Path]:
    document = yaml.safe_load((directory / KUSTOMIZATION).read_text()) or {}
    return {(directory / item).resolve() for item in document.get("resources") or []}


def staged_files(repo: Path) -> list[Path]:
    """Mesh files applied by hand (`kubectl apply -f`), outside istio/'s kustomization."""
    istio = repo / "istio"
    listed = _listed_files(istio)
    return sorted(
        p for p in istio.glob("*.yaml") if p.name != KUSTOMIZATION and p.resolve() not in listed
    )


def scenario_catalog(
    scenario: Scenario, rendered: dict[str, list[Resource]], staged: list[Resource]
) -> Catalog:
    """The resources deployed together in `scenario`."""
    catalog = Catalog()
    for label in scenario.kustomizations:
        catalog.add(rendered[label])
    if scenario.staged_routes:
        catalog.add(staged)
    if scenario.flagger:
        catalog.resources = [r for r in catalog.resources if (r.kind, r.name) not in FLAGGER_OWNED]
    return catalog


def run(repo: Path) -> list[Problem]:
    """Every problem in the repository's manifests (an empty list when there are none)."""
    kubectl = find_kubectl(repo)
    rendered: dict[str, list[Resource]] = {}
    problems: list[Problem] = []
    for directory in buildable_kustomizations(repo / "k8s") + buildable_kustomizations(
        repo / "istio"
    ):
        label = str(directory.relative_to(repo))
        try:
            rendered[label] = render(kubectl, directory, label)
        except RenderError as error:
            problems.append(Problem(label, "kustomization", "", str(error)))
    staged = [r for p in staged_files(repo) for r in load_file(p, str(p.relative_to(repo)))]
    everything = [r for resources in rendered.values() for r in resources]
    problems += validate_all(everything + staged)
    problems += check_conventions(everything)
    problems += check_dockerfiles(repo, everything)
    methods = grpc_methods(repo / "protos")
    for scenario in SCENARIOS:
        missing = [k for k in scenario.kustomizations if k not in rendered]
        if missing:
            problems += [
                Problem(
                    k, "kustomization", "", f"needed by scenario {scenario.name}, did not render"
                )
                for k in missing
                if (repo / k).is_dir()
            ]
            continue
        catalog = scenario_catalog(scenario, rendered, staged)
        problems += [_in_scenario(p, scenario) for p in check_all(catalog, methods)]
    return _unique(problems)


def _in_scenario(problem: Problem, scenario: Scenario) -> Problem:
    return Problem(
        problem.source,
        problem.resource,
        problem.field,
        f"{problem.message} (deployed as {scenario.name})",
    )


def _unique(problems: list[Problem]) -> list[Problem]:
    """One line per problem, however many scenarios share the resource at fault."""
    seen: dict[tuple[str, str, str], Problem] = {}
    for problem in problems:
        seen.setdefault((problem.source, problem.resource, problem.field), problem)
    return list(seen.values())
