//! Per-client state: QoS flows, packet ids, inflight, queues, will.
