//! Host metrics, in the units of OpenTelemetry's host-metrics conventions.
//!
//! sysinfo refreshes only what is reported: CPU usage, memory and swap,
//! file system space, network counters and temperatures. Load and uptime are
//! read directly. Nothing about processes or users is read, and mount points
//! under per-person paths (/home, /run/user, /media) are left out, since
//! their names can identify a person (docs/data-inventory.md).

use leitstand_proto::domain::bounds;
use leitstand_proto::v1;
use sysinfo::{
    Components, CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind,
    System,
};
use tokio::time::{Duration, Instant};

/// How often the lists of file systems, interfaces and sensors are re-read;
/// in between only their values are refreshed.
const LIST_REFRESH: Duration = Duration::from_secs(60);

/// File system types that hold no data worth reporting.
const PSEUDO_FILE_SYSTEMS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "squashfs",
    "sysfs",
    "tracefs",
    "tmpfs",
];

/// Mount points whose names may carry a person's name.
const PERSONAL_PATHS: &[&str] = &["/home", "/run/user", "/media", "/mnt/home"];

pub(crate) struct HostCollector {
    system: System,
    disks: Disks,
    networks: Networks,
    components: Components,
    lists_read: Instant,
}

fn refresh_kind() -> RefreshKind {
    RefreshKind::nothing()
        .with_cpu(CpuRefreshKind::nothing().with_usage())
        .with_memory(MemoryRefreshKind::nothing().with_ram().with_swap())
}

fn disk_kind() -> DiskRefreshKind {
    DiskRefreshKind::nothing().with_storage()
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

/// Cuts `text` to at most `max` bytes on a character boundary.
fn bounded(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn is_personal(mountpoint: &str) -> bool {
    PERSONAL_PATHS.iter().any(|p| {
        mountpoint == *p
            || mountpoint
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

impl HostCollector {
    pub(crate) fn new() -> Result<Self, sysinfo::Error> {
        // The first CPU reading only sets the baseline; the next refresh,
        // one report interval later, gives a meaningful utilisation.
        Ok(HostCollector {
            system: System::new_with_specifics(refresh_kind())?,
            disks: Disks::new_with_refreshed_list_specifics(disk_kind())?,
            networks: Networks::new_with_refreshed_list()?,
            components: Components::new_with_refreshed_list()?,
            lists_read: Instant::now(),
        })
    }

    pub(crate) fn collect(&mut self) -> v1::HostMetrics {
        self.system.refresh_specifics(refresh_kind());
        let reread_lists = self.lists_read.elapsed() >= LIST_REFRESH;
        if reread_lists {
            self.lists_read = Instant::now();
        }
        self.disks.refresh_specifics(reread_lists, disk_kind());
        self.networks.refresh(reread_lists);
        self.components.refresh(reread_lists);

        let load = System::load_average().unwrap_or_default();
        let memory_total = self.system.total_memory();
        let swap_total = self.system.total_swap();
        v1::HostMetrics {
            cpu_utilization: ratio(self.system.global_cpu_usage()),
            cpu_utilization_per_core: self
                .system
                .cpus()
                .iter()
                .take(bounds::MAX_CORES)
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
            filesystems: self.filesystems(),
            network_interfaces: self.interfaces(),
            temperatures: self.temperatures(),
        }
    }

    fn filesystems(&self) -> Vec<v1::FilesystemUsage> {
        self.disks
            .iter()
            .filter_map(|disk| {
                let mountpoint = disk.mount_point().to_str()?;
                let fs_type = disk.file_system().to_string_lossy();
                if PSEUDO_FILE_SYSTEMS.contains(&fs_type.as_ref()) || is_personal(mountpoint) {
                    return None;
                }
                if mountpoint.is_empty() || mountpoint.len() > bounds::MAX_MOUNTPOINT_BYTES {
                    return None;
                }
                let total = disk.total_space();
                Some(v1::FilesystemUsage {
                    mountpoint: mountpoint.to_owned(),
                    device: bounded(&disk.name().to_string_lossy(), bounds::MAX_DEVICE_BYTES),
                    r#type: bounded(&fs_type, bounds::MAX_FS_TYPE_BYTES),
                    used_bytes: total.saturating_sub(disk.available_space()),
                    total_bytes: total,
                })
            })
            .take(bounds::MAX_FILESYSTEMS)
            .collect()
    }

    fn interfaces(&self) -> Vec<v1::NetworkInterface> {
        let mut interfaces: Vec<v1::NetworkInterface> = self
            .networks
            .iter()
            .filter_map(|(name, data)| Some((name.to_str()?, data)))
            .filter(|(name, _)| !name.is_empty() && name.len() <= bounds::MAX_INTERFACE_NAME_BYTES)
            .map(|(name, data)| v1::NetworkInterface {
                name: name.to_owned(),
                received_bytes: data.total_received(),
                transmitted_bytes: data.total_transmitted(),
                received_packets: data.total_packets_received(),
                transmitted_packets: data.total_packets_transmitted(),
                receive_errors: data.total_errors_on_received(),
                transmit_errors: data.total_errors_on_transmitted(),
            })
            .collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        interfaces.truncate(bounds::MAX_INTERFACES);
        interfaces
    }

    fn temperatures(&self) -> Vec<v1::Temperature> {
        self.components
            .iter()
            .filter_map(|component| {
                let celsius = f64::from(component.temperature()?);
                let sensor = bounded(component.label(), bounds::MAX_SENSOR_BYTES);
                (!sensor.is_empty() && celsius.is_finite() && (-273.15..=1000.0).contains(&celsius))
                    .then_some(v1::Temperature { sensor, celsius })
            })
            .take(bounds::MAX_TEMPERATURES)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_mount_points_are_recognised() {
        for (path, personal) in [
            ("/home", true),
            ("/home/alice", true),
            ("/run/user/1000", true),
            ("/media/bob/usb", true),
            ("/homeless", false),
            ("/", false),
            ("/var/lib/leitstand", false),
        ] {
            assert_eq!(is_personal(path), personal, "{path}");
        }
    }

    #[test]
    fn a_collected_report_is_within_the_contract_bounds() {
        let mut collector = HostCollector::new().expect("sysinfo");
        let host = collector.collect();
        let report = v1::Report {
            seq: 1,
            observed_at_unix_ms: 1,
            host: Some(host.clone()),
            checks: vec![],
        };
        leitstand_proto::domain::Report::try_from(report)
            .expect("a collected report passes the controller's validation");
        assert!(host.memory_total_bytes > 0, "this machine has memory");
        assert!(
            !host.cpu_utilization_per_core.is_empty(),
            "and at least one core"
        );
        assert!(
            host.filesystems
                .iter()
                .all(|fs| !is_personal(&fs.mountpoint)),
            "no personal mount points: {:?}",
            host.filesystems
        );
    }
}
