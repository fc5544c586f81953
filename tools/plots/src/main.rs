//! `cargo run --release --manifest-path tools/plots/Cargo.toml -- OUT_DIR REPORT.json...`
//!
//! Reads `rollup bench --json` reports and draws: proven TPS against workers (per backend, with
//! the stock plonky2 baseline), proven TPS by backend, and time per stage of the largest run.

use std::collections::BTreeMap;
use std::error::Error;

use plotters::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Stage {
    name: String,
    seconds: f64,
}

#[derive(Deserialize)]
struct Report {
    backend: String,
    workers: usize,
    proven_tps: f64,
    stock_plonky2_tps: f64,
    stages: Vec<Stage>,
    txs: usize,
}

type R = Result<(), Box<dyn Error>>;

fn tps_by_workers(out: &str, reports: &[Report]) -> R {
    let root = BitMapBackend::new(out, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_w = reports.iter().map(|r| r.workers).max().unwrap_or(1) as f64 + 0.5;
    let ticks = max_w.ceil() as usize + 1;
    let max_y = reports.iter().map(|r| r.proven_tps.max(r.stock_plonky2_tps)).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption("Proven transactions per second against workers", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..max_w, 0.0..max_y)?;
    chart
        .configure_mesh()
        .x_labels(ticks)
        .x_label_formatter(&|x| if x.fract() == 0.0 { format!("{x}") } else { String::new() })
        .x_desc("workers on this machine")
        .y_desc("tx/s")
        .draw()?;
    let mut by_backend: BTreeMap<&str, Vec<&Report>> = BTreeMap::new();
    for r in reports {
        by_backend.entry(&r.backend).or_default().push(r);
    }
    for (i, (backend, mut rs)) in by_backend.into_iter().enumerate() {
        rs.sort_by_key(|r| r.workers);
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = rs.iter().map(|r| (r.workers as f64, r.proven_tps)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))?
            .label(format!("{backend}: block proof path"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 5, color.filled())))?;
        let stock: Vec<(f64, f64)> = rs.iter().map(|r| (r.workers as f64, r.stock_plonky2_tps)).collect();
        chart
            .draw_series(LineSeries::new(stock, color.mix(0.5).stroke_width(1)))?
            .label(format!("{backend} run: stock plonky2, same proofs"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.5).stroke_width(1)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}

/// For each backend, its best run's proven TPS beside the stock prover's on the same work and
/// host, measured in that run.
fn tps_by_backend(out: &str, reports: &[Report]) -> R {
    let mut best: BTreeMap<&str, &Report> = BTreeMap::new();
    for r in reports {
        let e = best.entry(&r.backend).or_insert(r);
        if r.proven_tps > e.proven_tps {
            *e = r;
        }
    }
    let bars: Vec<(String, f64, RGBAColor)> = best
        .iter()
        .enumerate()
        .flat_map(|(i, (backend, r))| {
            [
                (
                    format!("stock plonky2, {backend} run ({:.1})", r.stock_plonky2_tps),
                    r.stock_plonky2_tps,
                    RGBColor(150, 150, 150).to_rgba(),
                ),
                (
                    format!("{backend}, W = {} ({:.1})", r.workers, r.proven_tps),
                    r.proven_tps,
                    Palette99::pick(i).to_rgba(),
                ),
            ]
        })
        .collect();
    let root = BitMapBackend::new(out, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_y = bars.iter().fold(1.0f64, |a, b| a.max(b.1)) * 1.2;
    let n = bars.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption("Best proven transactions per second by backend", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..(n - 1).max(0)).into_segmented(), 0.0..max_y)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len().max(1))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => bars.get(*i as usize).map(|b| b.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc("tx/s")
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, tps, color))| {
        let i = i as i32;
        let mut bar =
            Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *tps)], color.filled());
        bar.set_margin(0, 0, 30, 30);
        bar
    }))?;
    root.present()?;
    Ok(())
}

fn stages(out: &str, r: &Report) -> R {
    let root = BitMapBackend::new(out, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_x = r.stages.iter().map(|s| s.seconds).fold(0.1, f64::max) * 1.15;
    let n = r.stages.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Time per stage: {} transactions, {} workers, {}", r.txs, r.workers, r.backend),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(200)
        .build_cartesian_2d(0.0..max_x, (0..(n - 1).max(0)).into_segmented())?;
    // The warm-up (a proof and a merge before the clock starts) is not part of the proving time.
    let labels: Vec<String> = r
        .stages
        .iter()
        .map(|s| match s.name.as_str() {
            "warmup" => format!("warm-up, not in the rate ({:.2} s)", s.seconds),
            name => format!("{name} ({:.2} s)", s.seconds),
        })
        .collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n as usize)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("seconds")
        .draw()?;
    chart.draw_series(r.stages.iter().enumerate().map(|(i, s)| {
        let i = i as i32;
        let mut bar = Rectangle::new(
            [(0.0, SegmentValue::Exact(i)), (s.seconds, SegmentValue::Exact(i + 1))],
            if s.name == "warmup" { BLACK.mix(0.25).filled() } else { BLUE.mix(0.6).filled() },
        );
        bar.set_margin(6, 6, 0, 0);
        bar
    }))?;
    root.present()?;
    Ok(())
}

fn main() -> R {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, files) = args.split_first().ok_or("usage: plots OUT_DIR REPORT.json...")?;
    let reports: Vec<Report> = files
        .iter()
        .map(|f| -> Result<Report, Box<dyn Error>> { Ok(serde_json::from_str(&std::fs::read_to_string(f)?)?) })
        .collect::<Result<_, _>>()?;
    let largest = reports.iter().max_by_key(|r| (r.txs, r.workers)).ok_or("no reports")?;
    tps_by_workers(&format!("{out}/tps_by_workers.png"), &reports)?;
    tps_by_backend(&format!("{out}/tps_by_backend.png"), &reports)?;
    stages(&format!("{out}/stages.png"), largest)?;
    Ok(())
}
