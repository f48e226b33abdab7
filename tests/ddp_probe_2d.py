"""``python -m tests.ddp_probe_2d [tools/train_net.py arguments]``: tools/train_net.py's training
with a probe hook in every worker (tests/2d/test_2d_distributed.py runs it).

After training each rank writes ``OUTPUT_DIR/probe/rank<r>.json``: what detectron2's ``comm``
reports (rank, world and local sizes) and a digest of every parameter before and after
training, for the test to compare across ranks and with the checkpoint.  The launch is
tools/train_net.py's own (``launch(main, ...)`` with the config's device).
"""
import json
import os

from detectron2.engine import HookBase, default_argument_parser
from detectron2.utils import comm

from tests import load_script
from tests.ddp_digests import parameter_digests

# at import, so that the spawned workers (which import this module again) get the probe too
train_net = load_script("tools/train_net.py")


class RankProbe(HookBase):
    def before_train(self):
        self.before = parameter_digests(train_net.unwrap_model(self.trainer.model))

    def after_train(self):
        out = os.path.join(self.trainer.cfg.OUTPUT_DIR, "probe")
        os.makedirs(out, exist_ok=True)
        record = {"rank": comm.get_rank(), "world_size": comm.get_world_size(), "local_rank": comm.get_local_rank(),
                  "local_size": comm.get_local_size(), "wrapped": type(self.trainer.model).__name__,
                  "before": self.before, "after": parameter_digests(train_net.unwrap_model(self.trainer.model))}
        with open(os.path.join(out, f"rank{comm.get_rank()}.json"), "w") as f:
            json.dump(record, f)


class ProbedTrainer(train_net.Trainer):
    def build_hooks(self):
        return super().build_hooks() + [RankProbe()]


train_net.Trainer = ProbedTrainer  # what train_net.main builds

if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    train_net.launch(train_net.main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                     dist_url=args.dist_url, args=(args,), device=train_net.load_cfg(args).MODEL.DEVICE)
