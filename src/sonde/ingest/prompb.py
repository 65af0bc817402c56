"""Prometheus remote-write 1.0 messages (``prompb``), declared at runtime.

No maintained package ships the ``prometheus.WriteRequest`` classes, and generated code
would be one more thing to keep in step, so the messages are declared here from
Prometheus's ``prompb/remote.proto`` and ``prompb/types.proto`` field numbers and built
by protobuf's message factory; bytes are read by protobuf's own parser (upb).

Only what Sonde reads is declared in full. A series' ``exemplars`` (3) and native
``histograms`` (4) are declared ``repeated bytes`` (the wire format allows it for any
length-delimited field): they are counted, not decoded. ``Label`` strings are proto3
``string``s, so a label that is not UTF-8 fails to decode, as Prometheus's own
receiver would have it.

Requests are read into a *view* (:data:`ViewWriteRequest`) whose ``TimeSeries.labels``
are ``repeated bytes`` too: each series hands over its encoded labels, a hashable key
for the receiver's cache of label sets (Prometheus sends the same series every
scrape), and only a label set not seen before is decoded, by :data:`Label`. Reading
labels through message objects costs more than everything else a sample needs.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from .._exceptions import BadRequest

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "prometheus"

#: MetricMetadata.MetricType, as Prometheus numbers it
METRIC_TYPES = ("unknown", "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset")


def _field(name: str, number: int, typ: int, *, repeated: bool = False, type_name: str = "") -> _F:
    f = _F(name=name, number=number, type=typ, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = f".{_PACKAGE}.{type_name}"
    return f


def _file(view: bool) -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="sonde/prompb_remote_write.proto", package=_PACKAGE,
                                             syntax="proto3")
    labels = (_field("labels", 1, _F.TYPE_BYTES, repeated=True) if view
              else _field("labels", 1, _F.TYPE_MESSAGE, repeated=True, type_name="Label"))
    fdp.message_type.add(name="Sample").field.extend([
        _field("value", 1, _F.TYPE_DOUBLE), _field("timestamp", 2, _F.TYPE_INT64)])
    fdp.message_type.add(name="Label").field.extend([
        _field("name", 1, _F.TYPE_STRING), _field("value", 2, _F.TYPE_STRING)])
    fdp.message_type.add(name="TimeSeries").field.extend([
        labels,
        _field("samples", 2, _F.TYPE_MESSAGE, repeated=True, type_name="Sample"),
        _field("exemplars", 3, _F.TYPE_BYTES, repeated=True),
        _field("histograms", 4, _F.TYPE_BYTES, repeated=True)])
    meta = fdp.message_type.add(name="MetricMetadata")
    enum = meta.enum_type.add(name="MetricType")
    for number, name in enumerate(METRIC_TYPES):
        enum.value.add(name=name.upper(), number=number)
    meta.field.extend([
        _field("type", 1, _F.TYPE_ENUM, type_name="MetricMetadata.MetricType"),
        _field("metric_family_name", 2, _F.TYPE_STRING), _field("help", 4, _F.TYPE_STRING),
        _field("unit", 5, _F.TYPE_STRING)])
    fdp.message_type.add(name="WriteRequest").field.extend([
        _field("timeseries", 1, _F.TYPE_MESSAGE, repeated=True, type_name="TimeSeries"),
        _field("metadata", 3, _F.TYPE_MESSAGE, repeated=True, type_name="MetricMetadata")])
    return fdp


def _classes(view: bool) -> dict:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file(view))
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in ("WriteRequest", "TimeSeries", "Label", "Sample", "MetricMetadata")}


_full = _classes(view=False)
#: the messages as senders build them (and tests, and benchmarks)
WriteRequest = _full["WriteRequest"]
TimeSeries = _full["TimeSeries"]
Label = _full["Label"]
Sample = _full["Sample"]
MetricMetadata = _full["MetricMetadata"]
#: the same wire format with each series' labels left encoded
ViewWriteRequest = _classes(view=True)["WriteRequest"]


def parse(raw: bytes):
    """Uncompressed bytes as a view ``WriteRequest``; 400 if they are not one."""
    try:
        return ViewWriteRequest.FromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"body does not decode as a protobuf prometheus.WriteRequest: {exc or 'malformed'}",
                         field="body") from None


def label(raw: bytes) -> tuple[str, str]:
    """One encoded Label (from a view's ``labels``) as (name, value); 400 if it is not one."""
    try:
        lab = Label.FromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"a label does not decode as a protobuf prometheus.Label: {exc or 'malformed'}",
                         field="body") from None
    return lab.name, lab.value
