"""`python -m deblur.launch ...`: torchrun, with a rendezvous that fails in one line.

The same arguments as torchrun (docs/scale-out.md). A node that never joins makes
torchrun's agent raise out of its rendezvous with a 40-line traceback; here it is one
line naming what did not happen and the fix, exit status 1. Anything else is torchrun's.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    import torch.distributed as dist
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = torchrun.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        torchrun.run(args)
    except (dist.DistStoreError, dist.DistNetworkError) as exc:
        where = f"{args.master_addr}:{args.master_port}"
        print(
            f"error: torchrun: the {args.nnodes} nodes did not meet at {where} ({exc}); start "
            "every node's agent with the same --master-addr and --master-port, or raise "
            "--rdzv-conf timeout=SECONDS",
            file=sys.stderr,
        )
        sys.exit(1)
    except ChildFailedError:  # a worker failed: it said why (one line from deblur)
        sys.exit(1)


if __name__ == "__main__":
    main()
