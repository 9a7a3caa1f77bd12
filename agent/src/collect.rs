//! Host metrics, in the units of OpenTelemetry's host-metrics conventions.
//! sysinfo refreshes only what is reported: CPU usage and memory. Load and
//! uptime are read directly; nothing about processes or users is read.

use leitstand_proto::v1;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

pub(crate) struct HostCollector {
    system: System,
}

fn refresh_kind() -> RefreshKind {
    RefreshKind::nothing()
        .with_cpu(CpuRefreshKind::nothing().with_usage())
        .with_memory(MemoryRefreshKind::nothing().with_ram().with_swap())
}

fn ratio(percent: f32) -> f64 {
    let r = f64::from(percent) / 100.0;
    if r.is_finite() {
        r.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn non_negative(value: f64) -> f64 {
    if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    }
}

impl HostCollector {
    pub(crate) fn new() -> Result<Self, sysinfo::Error> {
        // The first CPU reading only sets the baseline; the next refresh,
        // one report interval later, gives a meaningful utilisation.
        Ok(HostCollector {
            system: System::new_with_specifics(refresh_kind())?,
        })
    }

    pub(crate) fn collect(&mut self) -> v1::HostMetrics {
        self.system.refresh_specifics(refresh_kind());
        let load = System::load_average().unwrap_or_default();
        let memory_total = self.system.total_memory();
        let swap_total = self.system.total_swap();
        v1::HostMetrics {
            cpu_utilization: ratio(self.system.global_cpu_usage()),
            cpu_utilization_per_core: self
                .system
                .cpus()
                .iter()
                .take(leitstand_proto::domain::bounds::MAX_CORES)
                .map(|cpu| ratio(cpu.usage()))
                .collect(),
            load_average_1m: non_negative(load.one),
            load_average_5m: non_negative(load.five),
            load_average_15m: non_negative(load.fifteen),
            memory_used_bytes: self.system.used_memory().min(memory_total),
            memory_total_bytes: memory_total,
            swap_used_bytes: self.system.used_swap().min(swap_total),
            swap_total_bytes: swap_total,
            uptime_seconds: System::uptime().unwrap_or(0),
            ..Default::default()
        }
    }
}
