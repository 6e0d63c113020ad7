"""tfmesh's monitoring as code: Prometheus rule files, the Grafana dashboards and the
PrometheusRule built from them, all over the metric names of the metric contract (#11)."""
