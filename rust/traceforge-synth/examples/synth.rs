//! `cargo run --release -p traceforge-synth --example synth -- OUT KERNELS [DEVICES] [STREAMS] [SEED] [NSYS]`:
//! write a synthetic export without Python (for profiling the generator); NSYS is 2025.3 (default) or 2022.4.
use std::sync::atomic::AtomicBool;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let cfg = traceforge_synth::SynthConfig {
        kernels: num(2, 10_000),
        devices: num(3, 1) as u32,
        streams: num(4, 1) as u32,
        seed: num(5, 0),
        requests: None,
        overwrite: true,
        schema: match args.get(6) {
            Some(v) => traceforge_synth::SchemaVariant::parse(v).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(2)
            }),
            None => traceforge_synth::SchemaVariant::default(),
        },
        ..Default::default()
    };
    let t = std::time::Instant::now();
    match traceforge_synth::synthesize(std::path::Path::new(&args[1]), &cfg, &AtomicBool::new(false)) {
        Ok(s) => println!("{s:?} in {:.2} s", t.elapsed().as_secs_f64()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
