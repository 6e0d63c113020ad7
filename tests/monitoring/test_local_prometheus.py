"""The local stack's Prometheus configuration: what `tfmesh up --monitoring` writes passes
`promtool check config` with the repository's rule files, and a malformed one is refused
with promtool's own message (Debian's promtool, installed by make setup)."""

from __future__ import annotations

import pytest
import yaml

from cli.prometheus import LocalPrometheus, PrometheusError, ScrapeTarget, check_config


def test_the_generated_configuration_passes_promtool_with_every_rule_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TFMESH_PROMETHEUS_INTERVAL", "2s")
    prometheus = LocalPrometheus(tmp_path)
    path = prometheus.write_config(
        [ScrapeTarget("registry", "127.0.0.1:9103"), ScrapeTarget("gateway", "127.0.0.1:9105")]
    )
    config = yaml.safe_load(path.read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == [
        "tfmesh-registry",
        "tfmesh-gateway",
    ]
    assert config["global"]["scrape_interval"] == "2s"
    assert len(config["rule_files"]) >= 4


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"global": {"scrape_interval": "soon"}}, "not a valid duration string"),
        ({"scrape_configs": [{"job_name": "a"}, {"job_name": "a"}]}, "found multiple scrape"),
        ({"rule_files": ["/nowhere/*.yaml", "/nowhere/x.yaml"]}, "/nowhere/x.yaml"),
    ],
)
def test_a_malformed_configuration_is_refused_with_promtools_message(tmp_path, config, message):
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(PrometheusError) as refused:
        check_config(path)
    assert "promtool refused" in str(refused.value)
    assert message in str(refused.value)
