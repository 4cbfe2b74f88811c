//! `cargo bench --bench prefill`: the default (fastest) kernel on a few of `cuattn bench --family
//! prefill`'s shapes under criterion, timed the same way (CUDA events, L2 flushed before each
//! run), throughput in flops of unmasked score pairs. `cuattn bench` is the full run with the
//! mma.sync ceiling; on the emulator this runs one tiny shape, which is no performance number.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use cuattn::bench::{self, launch_prefill, PrefillInputs, PrefillShape, Timer};
use cuattn::{Device, FlashTiles, Kernel};

fn shapes(device: &Device) -> Vec<PrefillShape> {
    if !device.is_cuda() {
        println!(
            "prefill: no GPU, one tiny shape on the emulator ({})",
            bench::EMULATOR_NOTE
        );
        return vec![bench::emulator_shape()];
    }
    vec![
        PrefillShape::mha(2048, 64, false),
        PrefillShape::mha(2048, 128, false),
        PrefillShape::mha(2048, 128, true),
        PrefillShape::mha(8192, 128, true),
        PrefillShape::mha(2048, 256, true),
        PrefillShape::gqa(4096, true),
    ]
}

fn prefill(c: &mut Criterion) {
    let device = Device::auto();
    let kernel = Kernel::DEFAULT;
    let shapes = shapes(&device);
    let inputs = PrefillInputs::new(&device, &shapes).expect("allocating the inputs");
    let mut timer = Timer::new(&device).expect("allocating the L2 flush buffer");
    let mut group = c.benchmark_group(format!("prefill/{}/{}", kernel.name(), device.kind()));
    if !device.is_cuda() {
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_secs(1));
    }
    for shape in &shapes {
        let mut views = inputs.views(shape).expect("views of the inputs");
        let causal = if shape.causal { "causal" } else { "full" };
        // Criterion's "elem/s" are flop/s here.
        group.throughput(Throughput::Elements(shape.flops() as u64));
        group.bench_function(
            BenchmarkId::new(causal, shape.label().replace(' ', "_").replace('/', "-")),
            |b| {
                // Criterion's elapsed time is the sum of the event-timed runs: the L2 flushes
                // between them are not counted.
                b.iter_custom(|iters| {
                    let times = timer
                        .time(0, iters as usize, || {
                            launch_prefill(kernel, &mut views, shape, None, FlashTiles::Auto)
                        })
                        .expect("the kernel runs");
                    Duration::from_secs_f64(times.iter().sum::<f64>() * 1e-3)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, prefill);
criterion_main!(benches);
