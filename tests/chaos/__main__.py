"""`make chaos SEED=… FAULTS=…`: a long chaos run on a private stack; prints the seed and the table."""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from pathlib import Path

from tests.chaos.run import ChaosRun
from tests.harness.stack import SERVICE_TYPES, Stack
from tests.harness.zookeeper import ZooKeeperEnsemble


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--faults", type=int, default=100)
    p.add_argument(
        "--ensemble",
        action="store_true",
        help="a 3-server ZooKeeper ensemble (adds the 'follower isolation' fault)",
    )
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**8)
    print(f"chaos: seed {seed}, {args.faults} faults", flush=True)
    with tempfile.TemporaryDirectory(prefix="idsync-chaos-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        stack = Stack(root / "stack")
        pg = SERVICE_TYPES["postgres"](root / "pg")
        zk = None if args.ensemble else SERVICE_TYPES["zookeeper"](root / "zk")
        ensemble = ZooKeeperEnsemble(root / "zk") if args.ensemble else None
        pg.start()
        if zk is not None:
            zk.start()
        if ensemble is not None:
            ensemble.start()
        samba = stack.samba()
        try:
            run = ChaosRun(
                root / "run", seed=seed, faults=args.faults, postgres=pg, zookeeper=zk,
                samba_ep=samba.endpoint, samba=None if samba.shared else samba, ensemble=ensemble,
            )  # fmt: skip
            result = run.run()
            if result.violations:  # keep the evidence: every node's log and the emulator's
                keep = Path(f"/tmp/idsync-chaos-{seed}")
                keep.mkdir(exist_ok=True)
                for log in (root / "run").rglob("*.log"):
                    shutil.copy(log, keep / log.name)
                print(f"logs kept in {keep}")
        finally:
            stack.down()
            if zk is not None:
                zk.destroy()
            if ensemble is not None:
                ensemble.close()
            pg.destroy()
    print(result.table())
    return 0 if not result.violations else 1


if __name__ == "__main__":
    raise SystemExit(main())
