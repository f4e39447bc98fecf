//! The forwarding hot path without the network: one SRTP-protected publisher packet in →
//! decrypted, forwarded, rewritten and SRTP-protected packets out for N subscribers.
//!
//! A real room (`confab::room::state::Room`) is driven through its sans-IO inputs by the
//! virtual-time harness (`tests/harness`): the publisher and subscribers are `rtc` peer
//! connections that completed ICE and DTLS with it in memory. Only `Room::on_datagram` (and
//! discarding its output) is timed. Criterion's throughput is outgoing packets: time per
//! element = time per outgoing packet.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::Harness;

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    for n in [1usize, 10, 100] {
        let mut h = Harness::fan_out(n);
        // Steady state: one delta-frame packet → one datagram per subscriber.
        h.send_video(0, false);
        assert_eq!(h.room.transmits_mut().len(), n, "one packet per subscriber");
        h.room.transmits_mut().clear();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("packet_to_subscribers", n),
            &n,
            |bencher, _| {
                bencher.iter_custom(|iters| {
                    // Encrypt the publisher's packets outside the timed region.
                    let datagrams: Vec<_> =
                        (0..iters).map(|_| h.publisher_datagram(0, false)).collect();
                    let start = Instant::now();
                    for d in datagrams {
                        h.room.on_datagram(h.now, d);
                        h.room.transmits_mut().clear();
                    }
                    start.elapsed()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
