"""`make manifests-check`: the Kubernetes and Istio manifests, checked offline.

Renders every kustomization under k8s/ and istio/ with kustomize, validates the core
resources against Kubernetes' schemas (kubernetes-validate), the Istio resources against
Istio's published CRD schemas (@kubernetes-models/istio) and the Flagger and Prometheus
Operator resources against schemas of the fields used here, checks the conventions the
suite relies on (probes, limits, non-root, read-only root filesystem), and cross-checks
references between resources: routes to subsets and ports that exist (and delegated
routes to VirtualServices that can be delegates), subsets and
selectors that select pods, policies that name real identities and gRPC methods, a Canary
aimed at a real Deployment, monitors that select Services or pods with the port they
scrape. Every problem names its file, its resource and the field at fault."""
