"""Rollouts decided by live evidence: the policy a model rolls out by (`policy`), the
statistical checks (`evidence`), the rollouts and their audit trail in the registry's
database (`book`), and the controller that moves them (`controller`), which reads the
inference service's per-version figures through `figures`."""
