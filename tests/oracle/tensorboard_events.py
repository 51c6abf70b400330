"""The TensorBoard oracle: reads flowrun's event files with PyPI's tensorboard
(its own readers, which check every record's CRCs) and prints what it found
as JSON. Run by the venv's Python (setup.sh's .venv-tensorboard/).

  tensorboard_events.py read RUN_DIR OUT_DIR      scalars, images (their PNGs written to OUT_DIR), texts,
                                                  hparams, each file's first event, as EventAccumulator reads them
  tensorboard_events.py corrupt EVENT_FILE OUT_DIR  a copy with one byte of record 2's data CRC changed (and
                                                  one with its length CRC changed), read by tensorboard's
                                                  record reader and event file loader
  tensorboard_events.py fields DESCRIPTOR_SET     every message and field of flowrun's .proto files (a
                                                  protoc --descriptor_set_out) against tensorboard's own
"""
import glob
import io
import json
import os
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
from tensorboard.plugins.hparams import plugin_data_pb2 as hparams_data_pb2


def read(run_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    files = sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))
    result = {"files": [os.path.basename(f) for f in files], "first": [], "records": []}
    for path in files:
        events = [event_pb2.Event.FromString(raw) for raw in event_file_loader.RawEventFileLoader(path).Load()]
        result["first"].append({"file_version": events[0].file_version, "wall_time": events[0].wall_time,
                                "what": events[0].WhichOneof("what")})
        result["records"].append(len(events))
    accumulator = event_accumulator.EventAccumulator(
        run_dir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0,
                                event_accumulator.TENSORS: 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    result["scalars"] = {tag: [[e.step, e.value] for e in accumulator.Scalars(tag)] for tag in tags["scalars"]}
    images = {}
    from PIL import Image  # tensorboard's own dependency
    for tag in tags["images"]:
        images[tag] = []
        for n, e in enumerate(accumulator.Images(tag)):
            name = os.path.join(out_dir, "%s.%d.png" % (tag.replace("/", "_"), n))
            with open(name, "wb") as f:
                f.write(e.encoded_image_string)
            decoded = Image.open(io.BytesIO(e.encoded_image_string))
            decoded.load()
            images[tag].append({"step": e.step, "width": e.width, "height": e.height, "file": name,
                                "decoded": [decoded.width, decoded.height], "mode": decoded.mode})
    result["images"] = images
    def plugin_tags(plugin):
        try:
            return accumulator.PluginTagToContent(plugin)
        except KeyError:  # no summary of that plugin
            return {}

    texts = {}
    for tag in plugin_tags("text"):
        texts[tag] = [[e.step, b"".join(e.tensor_proto.string_val).decode("utf-8")] for e in accumulator.Tensors(tag)]
    result["texts"] = texts
    hparams = {"tags": []}
    for tag, content in plugin_tags("hparams").items():
        hparams["tags"].append(tag)
        data = hparams_data_pb2.HParamsPluginData.FromString(content)
        kind = data.WhichOneof("data")
        if kind == "session_start_info":
            values = {}
            for name, value in data.session_start_info.hparams.items():
                values[name] = getattr(value, value.WhichOneof("kind"))
            hparams["start"] = values
        elif kind == "experiment":
            hparams["experiment"] = {
                "hparams": [h.name for h in data.experiment.hparam_infos],
                "metrics": [m.name.tag for m in data.experiment.metric_infos]}
        elif kind == "session_end_info":
            from tensorboard.plugins.hparams import api_pb2
            hparams["end"] = api_pb2.Status.Name(data.session_end_info.status)
    result["hparams"] = hparams
    return result


def records_read(path):
    """Records the reader yields before it stops, and its error (None at a clean end)."""
    reader = pywrap_tensorflow.PyRecordReader_New(path)
    count = 0
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return count, None
        except errors.DataLossError as e:
            return count, str(e)
        count += 1


def corrupt(path, out_dir):
    with open(path, "rb") as f:
        data = f.read()
    # Record offsets from the framing: 8-byte length, 4-byte CRC, data, 4-byte CRC.
    offsets, at = [], 0
    while at + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        offsets.append((at, length))
        at += 12 + length + 4
    result = {"intact": dict(zip(("read", "error"), records_read(path))), "records": len(offsets)}
    start, length = offsets[2]
    for name, byte in (("data_crc", start + 12 + length), ("length_crc", start + 8)):
        changed = bytearray(data)
        changed[byte] ^= 0x01
        copy = os.path.join(out_dir, name + "." + os.path.basename(path))
        with open(copy, "wb") as f:
            f.write(changed)
        read_count, error = records_read(copy)
        loaded = sum(1 for _ in event_file_loader.RawEventFileLoader(copy).Load())
        result[name] = {"read": read_count, "error": error, "loader_events": loaded}
    return result


def fields(descriptor_set):
    """Compares every message of flowrun's protos with tensorboard's, by full name."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: F401
    from tensorboard.plugins.hparams import api_pb2  # noqa: F401
    from tensorboard.plugins.text import plugin_data_pb2  # noqa: F401
    theirs = descriptor_pool.Default()
    mine = descriptor_pb2.FileDescriptorSet.FromString(open(descriptor_set, "rb").read())
    problems, checked = [], 0

    def message(proto, prefix):
        nonlocal checked
        full = prefix + "." + proto.name
        try:
            other = theirs.FindMessageTypeByName(full)
        except KeyError:
            problems.append("no message %s in tensorboard" % full)
            return
        if proto.options.map_entry:
            return
        for f in proto.field:
            o = other.fields_by_name.get(f.name)
            if o is None:
                problems.append("%s.%s: no such field in tensorboard" % (full, f.name))
                continue
            checked += 1
            if o.number != f.number:
                problems.append("%s.%s: number %d, tensorboard's %d" % (full, f.name, f.number, o.number))
            if o.type != f.type:
                problems.append("%s.%s: type %d, tensorboard's %d" % (full, f.name, f.type, o.type))
            repeated = f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
            their_repeated = o.is_repeated if hasattr(o, "is_repeated") else o.label == o.LABEL_REPEATED
            if repeated != their_repeated:
                problems.append("%s.%s: repeated %s, tensorboard's %s" % (full, f.name, repeated, their_repeated))
            if f.type_name and o.message_type is not None and f.type_name.lstrip(".") != o.message_type.full_name:
                problems.append("%s.%s: of %s, tensorboard's %s" % (full, f.name, f.type_name, o.message_type.full_name))
            if f.type_name and o.enum_type is not None and f.type_name.lstrip(".") != o.enum_type.full_name:
                problems.append("%s.%s: of %s, tensorboard's %s" % (full, f.name, f.type_name, o.enum_type.full_name))
            mine_oneof = proto.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") and not f.proto3_optional else None
            their_oneof = o.containing_oneof.name if o.containing_oneof else None
            if mine_oneof != their_oneof:
                problems.append("%s.%s: oneof %s, tensorboard's %s" % (full, f.name, mine_oneof, their_oneof))
        for nested in proto.nested_type:
            message(nested, full)

    def enum(proto, prefix):
        nonlocal checked
        full = prefix + "." + proto.name
        try:
            other = theirs.FindEnumTypeByName(full)
        except KeyError:
            problems.append("no enum %s in tensorboard" % full)
            return
        for v in proto.value:
            o = other.values_by_name.get(v.name)
            checked += 1
            if o is None or o.number != v.number:
                problems.append("%s.%s = %d, tensorboard's %s" % (full, v.name, v.number, o.number if o else None))

    for file in mine.file:
        if not file.name.startswith("tensorboard/"):
            continue  # google/protobuf/struct.proto, protobuf's own
        for m in file.message_type:
            message(m, file.package)
            for nested in m.enum_type:
                enum(nested, file.package + "." + m.name)
        for e in file.enum_type:
            enum(e, file.package)
    return {"problems": problems, "checked": checked, "files": [f.name for f in mine.file]}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "read":
        out = read(sys.argv[2], sys.argv[3])
    elif mode == "corrupt":
        out = corrupt(sys.argv[2], sys.argv[3])
    elif mode == "fields":
        out = fields(sys.argv[2])
    else:
        sys.exit("unknown mode " + mode)
    json.dump(out, sys.stdout)
