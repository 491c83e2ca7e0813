"""Bytes one federated round puts on the wire for one node, at SD 1.5 adapter size.

    python bench/round_bytes.py                    # SD 1.5 UNet shapes, trainer defaults
    python bench/round_bytes.py --tiny             # the tiny model of sdcore.tiny
    python bench/round_bytes.py --rank 16 --adapter-mode lora
    python bench/round_bytes.py --family sdxl      # SDXL 1.0 base's UNet shapes (2.57 B)

The UNet is SD 1.5's architecture (``block_out_channels`` 320/640/1280/1280, two layers per
block, 8 attention heads, cross-attention 768: the config is written below) built on the
``meta`` device: no weights, no download, only shapes. The trainer's adapter
(``federated.engine.adapter.attach_adapter`` with the job defaults of
``train_config_from_run_config``: rank 4, FFA-LoRA, so only ``lora_B`` travels) is added and
its transported tensors are filled with random float32 values (a trained adapter; an all-zero
one would let Flower deduplicate identical chunks and look smaller than it is).

Both messages of a round are built by the engine's own code: the server's train message by
``federated.engine.flower.strategy._train_messages`` and the node's reply the way
``federated.engine.flower.client_app.train`` builds it (same records, same ``pack``), for both
transports (``packed``: one flat array, the default since issue #14; ``named``: one Array per
tensor, still accepted). The node replies in the format it was sent, as ``client_app`` does.

Flower 1.41 moves a message over the Fleet API as protobuf bodies over HTTP: the message
without content plus its object tree, then one request per object (RecordDict, ArrayRecord,
each Array and each of its 5 MB chunks, metric and config records). Every request and
response body of that exchange is built with Flower's own protobuf classes and serde and its
``ByteSize()`` summed:

- server -> node: PullMessages (request + response), PullObject per object (request +
  response with the object's content), ConfirmMessageReceived;
- node -> server: PushMessages (request + response), PushObject per object.

HTTP: the node's request line and headers are measured once as Flower's httpx client builds
them and added per request in the "with headers" ratio; the SuperLink's response headers
(another ~100-200 bytes per request), node-authentication headers and TLS framing are not
counted (the number of requests is printed). The ratio is those bytes over the adapter's
raw size (the sum of the transported tensors' ``nbytes``). Target (issue #14): <= 1.01x.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

# SD 1.5's UNet (runwayml/stable-diffusion-v1-5 unet/config.json), written out, not downloaded.
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD15_UNET_PARAMETERS = 859_520_964  # parameter count of SD 1.5's UNet, to check the shapes
TARGET = 1.01


@dataclass(frozen=True)
class WireBytes:
    """Fleet API bodies of one message's delivery."""

    up: int  # bytes the node sends (request bodies)
    down: int  # bytes the node receives (response bodies)
    requests: int  # HTTP requests
    objects: int  # Flower objects (RecordDict, ArrayRecord, Array, ArrayChunk, ...)

    @property
    def total(self) -> int:
        return self.up + self.down


def request_header_bytes() -> int:
    """Request line and headers of one Fleet API call as Flower's httpx client builds it."""
    import httpx
    from flwr.supercore.protobuf.constants import PROTOBUF_MEDIA_TYPE

    with httpx.Client() as client:
        request = client.build_request(
            "POST",
            "http://127.0.0.1:9092/v1/fleet/push-object",
            content=b"x" * 4096,
            headers={"content-type": PROTOBUF_MEDIA_TYPE, "accept": PROTOBUF_MEDIA_TYPE},
        )
    line = f"POST {request.url.raw_path.decode()} HTTP/1.1\r\n"
    fields = sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
    return len(line) + fields + 2


def unet_config(*, tiny: bool, family: str = "sd1") -> dict[str, Any]:
    if family == "sdxl":
        if tiny:
            from sdcore.tiny_xl import tiny_sdxl_component_configs

            return dict(tiny_sdxl_component_configs()["unet"])
        sys.path.insert(0, str(ROOT / "bench"))
        from _common import SDXL_UNET_CONFIG

        return dict(SDXL_UNET_CONFIG)
    if tiny:
        from sdcore.tiny import tiny_component_configs

        return dict(tiny_component_configs()["unet"])
    return dict(SD15_UNET_CONFIG)


def adapter_shapes(
    *, tiny: bool, rank: int, mode: str, family: str = "sd1"
) -> tuple[OrderedDict[str, tuple[int, ...]], int]:
    """(transported tensor name -> shape, in module order; the UNet's parameter count)."""
    from diffusers import UNet2DConditionModel

    from federated.engine.adapter import AdapterSpec, adapter_state_dict, attach_adapter

    spec = AdapterSpec(rank=rank, alpha=float(rank), mode=mode)  # type: ignore[arg-type]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config(tiny=tiny, family=family))
    parameters = sum(p.numel() for p in unet.parameters())
    attach_adapter(unet, spec)  # the trainer's own call (copies into meta tensors: no-ops)
    # get_adapter_arrays' selection (B only for FFA-LoRA), without reading meta tensors
    shapes = OrderedDict(
        (name, tuple(tensor.shape))
        for name, tensor in adapter_state_dict(unet).items()
        if mode == "lora" or ".lora_B." in name
    )
    return shapes, parameters


def random_adapter(shapes: OrderedDict[str, tuple[int, ...]]) -> OrderedDict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return OrderedDict(
        (name, rng.standard_normal(shape, dtype=np.float32) * 1e-3)
        for name, shape in shapes.items()
    )


def _node() -> Any:
    from flwr.proto.node_pb2 import Node

    return Node(node_id=0x7FFF_FFFF_FFFF_FFF1)


def pull_bytes(message: Any, run_id: int) -> WireBytes:
    """A SuperNode pulling ``message`` (with content) from the SuperLink."""
    from flwr.app.message import remove_content_from_message
    from flwr.common.serde import message_to_proto
    from flwr.proto.fleet_pb2 import PullMessagesRequest, PullMessagesResponse
    from flwr.proto.message_pb2 import (
        ConfirmMessageReceivedRequest,
        ConfirmMessageReceivedResponse,
        PullObjectRequest,
        PullObjectResponse,
    )
    from flwr.supercore.inflatable.inflatable_object import (
        get_all_nested_objects,
        get_object_tree,
    )

    node = _node()
    up = PullMessagesRequest(node=node).ByteSize()
    down = PullMessagesResponse(
        messages_list=[message_to_proto(remove_content_from_message(message))],
        message_object_trees=[get_object_tree(message)],
    ).ByteSize()
    objects = get_all_nested_objects(message)
    for object_id, obj in objects.items():
        up += PullObjectRequest(node=node, run_id=run_id, object_id=object_id).ByteSize()
        down += PullObjectResponse(
            object_found=True, object_available=True, object_content=obj.deflate()
        ).ByteSize()
    up += ConfirmMessageReceivedRequest(
        node=node, run_id=run_id, message_object_id=message.object_id
    ).ByteSize()
    down += ConfirmMessageReceivedResponse().ByteSize()
    return WireBytes(up, down, requests=len(objects) + 2, objects=len(objects))


def push_bytes(message: Any, run_id: int) -> WireBytes:
    """A SuperNode pushing its reply ``message`` (with content) to the SuperLink."""
    from flwr.app.message import remove_content_from_message
    from flwr.common.serde import message_to_proto
    from flwr.proto.fleet_pb2 import PushMessagesRequest, PushMessagesResponse
    from flwr.proto.message_pb2 import PushObjectRequest, PushObjectResponse
    from flwr.supercore.inflatable.inflatable_object import (
        get_all_nested_objects,
        get_object_tree,
    )

    node = _node()
    session = "0" * 32
    objects = get_all_nested_objects(message)
    up = PushMessagesRequest(
        node=node,
        messages_list=[message_to_proto(remove_content_from_message(message))],
        message_object_trees=[get_object_tree(message)],
        clientapp_runtime_list=[123.456],
    ).ByteSize()
    down = PushMessagesResponse(objects_to_push=list(objects), session_id=session).ByteSize()
    for object_id, obj in objects.items():
        up += PushObjectRequest(
            node=node,
            run_id=run_id,
            object_id=object_id,
            object_content=obj.deflate(),
            session_id=session,
        ).ByteSize()
        down += PushObjectResponse(stored=True).ByteSize()
    return WireBytes(up, down, requests=len(objects) + 1, objects=len(objects))


@contextmanager
def _task_identity(run_id: int, *, node_id: int) -> Iterator[None]:
    """Flower's per-process task identity, as a ServerApp or ClientApp process has it."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = run_id, 1, node_id
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


def round_messages(
    arrays: OrderedDict[str, np.ndarray], *, transport: str | None, run_id: int
) -> tuple[Any, Any]:
    """(the server's train message to one node, that node's reply), built by the engine.

    ``transport`` None: the run config names none (the job default)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    from federated.engine.flower.reply_check import (
        ARRAY_RECORD,
        INFO_RECORD,
        METRIC_RECORD,
        PACKED_ARRAY,
        pack,
    )
    from federated.engine.flower.settings import ServerSettings
    from federated.engine.flower.strategy import _train_messages

    config = {"out-dir": "/nonexistent", "base-model-path": "/nonexistent"}
    settings = ServerSettings.from_run_config(
        config if transport is None else {**config, "transport": transport}, run_id=run_id
    )
    with _task_identity(run_id, node_id=1):  # the ServerApp's process (SuperLink node 1)
        messages, _ = _train_messages(settings, [int(_node().node_id)], arrays, server_round=3)
    train = messages[0]
    train.metadata.__dict__["_message_id"] = train.object_id  # what the Grid sets on push
    packed = PACKED_ARRAY in train.content.array_records[ARRAY_RECORD]  # as client_app reads it
    # client_app.train's reply: the same records, the same metrics keys
    metrics: dict[str, float | int] = {
        "num-examples": 128,
        "train-loss": 0.123456789,
        "steps": 10,
        "total-steps": 30,
        "epsilon": 3.21,
        "delta": 1e-5,
        "noise-multiplier": 0.997,
        "seconds": 12.345678,
        "server-round": 3,
        "message-seconds": 13.456789,
    }
    content = RecordDict(
        {
            ARRAY_RECORD: ArrayRecord(
                {name: Array(value) for name, value in (pack(arrays) if packed else arrays).items()}
            ),
            METRIC_RECORD: MetricRecord(metrics),  # type: ignore[arg-type]
            INFO_RECORD: ConfigRecord({"manifest-hash": "ab" * 32}),
        }
    )
    with _task_identity(run_id, node_id=int(_node().node_id)):  # the ClientApp's process
        reply = Message(content, reply_to=train)
    return train, reply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny model instead of SD 1.5")
    parser.add_argument("--rank", type=int, default=None, help="default: the job default")
    parser.add_argument("--adapter-mode", choices=("ffa", "lora"), default=None)
    parser.add_argument("--family", choices=("sd1", "sdxl"), default="sd1")
    args = parser.parse_args(argv)

    from federated.engine.flower.settings import train_config_from_run_config

    defaults = train_config_from_run_config({}).adapter
    rank = args.rank or defaults.rank
    mode = args.adapter_mode or defaults.mode
    shapes, parameters = adapter_shapes(tiny=args.tiny, rank=rank, mode=mode, family=args.family)
    sdxl = args.family == "sdxl"
    expected = 2_567_463_684 if sdxl else SD15_UNET_PARAMETERS  # SDXL 1.0 base / SD 1.5
    if not args.tiny and parameters != expected:
        print(f"round_bytes: UNet has {parameters} parameters, the real one has {expected}")
        return 1
    arrays = random_adapter(shapes)
    raw = sum(int(a.nbytes) for a in arrays.values())
    model = ("tiny SDXL" if sdxl else "tiny") if args.tiny else ("SDXL" if sdxl else "SD 1.5")
    print(
        f"round_bytes: {model} UNet ({parameters:,} parameters), adapter rank {rank} mode "
        f"{mode}: {len(arrays)} transported tensors, raw {raw:,} bytes "
        f"({raw / parameters / 4:.5f} of the UNet's fp32 size)"
    )
    run_id = 4_242_424_242
    header = request_header_bytes()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%MZ")
    where = f"{platform.node()}, {os.cpu_count()} cores, flwr Fleet API protobuf bodies"
    from federated.engine.flower.settings import ServerSettings

    default = ServerSettings.from_run_config(
        {"out-dir": "/nonexistent", "base-model-path": "/nonexistent"}, run_id=run_id
    ).transport
    print(f"round_bytes: the default transport (no 'transport' in the run config) is {default}")
    for transport in ("named", "packed"):
        train, reply = round_messages(
            arrays, transport=None if transport == default else transport, run_id=run_id
        )
        down = pull_bytes(train, run_id)
        up = push_bytes(reply, run_id)
        for label, wire in (("server->node", down), ("node->server", up)):
            print(
                f"round_bytes: transport {transport} {label}: {wire.total:,} bytes "
                f"(node sends {wire.up:,}, receives {wire.down:,}; {wire.objects} objects, "
                f"{wire.requests} HTTP requests), ratio {wire.total / raw:.4f}, with request "
                f"headers ({header} B each) {(wire.total + header * wire.requests) / raw:.4f} "
                f"(target <= {TARGET})"
            )
        heads = max(down.total + header * down.requests, up.total + header * up.requests)
        print(
            f"RESULTS: | bytes per round per node / adapter raw, {model}, rank {rank} {mode}, "
            f"transport {transport}{' (default)' if transport == default else ''} "
            f"({raw / 1e6:.2f} MB) | `bench/round_bytes.py"
            f"{' --tiny' if args.tiny else ''}{' --family sdxl' if sdxl else ''}` | "
            f"down {down.total / raw:.4f}x, up "
            f"{up.total / raw:.4f}x; with the node's HTTP request headers {heads / raw:.4f}x "
            f"({down.requests}+{up.requests} requests; {where}; {date}) | <= {TARGET}x | "
            f"{'met' if heads / raw <= TARGET else '**not met**'} |"
        )
        worst = max(down.total, up.total) / raw
        print(
            f"RATIO {transport}{' (default)' if transport == default else ''} wire/raw = "
            f"{worst:.4f}x, with request headers "
            f"{heads / raw:.4f}x (target <= {TARGET}x)"
        )
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
