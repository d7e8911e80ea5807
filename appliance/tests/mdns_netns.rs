//! mDNS for real, between two network namespaces this test creates and
//! joins with a veth pair (10.213.7.0/24 and fd00:6c6b::/64, which exist
//! only inside them): `lookout` runs in one, a real resolver (avahi-daemon
//! with its own D-Bus, queried with `avahi-resolve` and `avahi-browse`) in
//! the other. The camera's name must resolve to IPv4 and IPv6 addresses and
//! its `_https._tcp` service must be found with its TXT record. A second
//! test runs a camera in each namespace: each lists the other in
//! `/api/info`, and forgets it when it stops.
//!
//! Needs root (CI runs as root) and the Debian packages iproute2, avahi-daemon,
//! avahi-utils and dbus. Without them the test fails with a clear message; it
//! never passes silently. The namespaces are removed even when it fails.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lookout_provisioning::{DeviceId, Identity, IDENTITY_FILE_NAME};

const CAMERA_V4: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 1);
const RESOLVER_V4: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 2);
const CAMERA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6c6b, 0, 0, 0, 0, 0, 1);
const RESOLVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6c6b, 0, 0, 0, 0, 0, 2);
const PORT: u16 = 8443;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs `ip`, which must succeed.
fn ip(args: &[&str]) -> String {
    let output = run("ip", args);
    assert!(
        output.status.success(),
        "ip {} failed: {} (this test needs root and network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn require_root_and_tools() {
    let uid = String::from_utf8(run("id", &["-u"]).stdout).unwrap_or_default();
    assert_eq!(
        uid.trim(),
        "0",
        "the mDNS test creates network namespaces and must run as root (CI does); it cannot pass without them"
    );
    for (program, package) in [
        ("/usr/sbin/avahi-daemon", "avahi-daemon"),
        ("/usr/bin/avahi-resolve", "avahi-utils"),
        ("/usr/bin/avahi-browse", "avahi-utils"),
        ("/usr/bin/dbus-daemon", "dbus"),
    ] {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: install {package} (bash scripts/test.sh does)"
        );
    }
}

/// The two namespaces, the veth pair between them and the processes in them.
/// Dropping it kills those processes and deletes the namespaces, also when
/// the test panics half-way.
struct Lab {
    camera_ns: String,
    resolver_ns: String,
    camera_if: String,
    resolver_if: String,
    lookout: Option<common::LookoutProcess>,
    /// A second camera, in the other namespace.
    neighbour: Option<common::LookoutProcess>,
}

impl Lab {
    fn new() -> Lab {
        // Unique per lab: the tests of this file run in parallel in one process.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let lab_number = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
        let tag = (std::process::id() % 100_000) * 10 + lab_number;
        let lab = Lab {
            camera_ns: format!("lookout-mdns-cam-{tag}"),
            resolver_ns: format!("lookout-mdns-res-{tag}"),
            camera_if: format!("lkmc{tag}"),
            resolver_if: format!("lkmr{tag}"),
            lookout: None,
            neighbour: None,
        };
        let (a, b, va, vb) = (&lab.camera_ns, &lab.resolver_ns, &lab.camera_if, &lab.resolver_if);
        ip(&["netns", "add", a]);
        ip(&["netns", "add", b]);
        // Both ends are created inside the namespaces: nothing appears on the host.
        ip(&["link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b]);
        for (ns, dev, v4, v6) in [(a, va, CAMERA_V4, CAMERA_V6), (b, vb, RESOLVER_V4, RESOLVER_V6)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        lab.wait_for_link_local();
        lab
    }

    /// Waits until duplicate address detection has finished for the link-local addresses.
    fn wait_for_link_local(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (ns, dev) in [(&self.camera_ns, &self.camera_if), (&self.resolver_ns, &self.resolver_if)] {
            loop {
                let addrs = ip(&["-n", ns, "-6", "addr", "show", "dev", dev]);
                if addrs.contains("fe80::") && !addrs.contains("tentative") {
                    break;
                }
                assert!(Instant::now() < deadline, "IPv6 link-local address never became usable:\n{addrs}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The camera namespace's IPv6 addresses on its veth end.
    fn camera_v6_addresses(&self) -> Vec<Ipv6Addr> {
        ip(&["-n", &self.camera_ns, "-6", "-o", "addr", "show", "dev", &self.camera_if])
            .lines()
            .filter_map(|line| line.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
            .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
            .collect()
    }

    /// Starts `lookout` in the camera namespace; waits until it announces itself.
    fn start_lookout(&mut self, state: &Path, boot: &Path) {
        self.lookout = Some(spawn_lookout(&self.camera_ns, state, boot));
    }

    /// Starts a second `lookout`, in the resolver namespace.
    fn start_neighbour(&mut self, state: &Path, boot: &Path) {
        self.neighbour = Some(spawn_lookout(&self.resolver_ns, state, boot));
    }

    /// `/api/info` of the camera in namespace `ns`, fetched from inside it.
    fn api_info(&self, ns: &str) -> serde_json::Value {
        let url = format!("https://127.0.0.1:{PORT}/api/info");
        let output = run("ip", &["netns", "exec", ns, "curl", "-sk", "--max-time", "5", &url]);
        assert!(
            output.status.success(),
            "curl {url} in {ns} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("/api/info is JSON")
    }

    /// Runs `script` with `sh` in the resolver namespace (in one mount
    /// namespace, so its private /run/dbus and /run/avahi-daemon hold).
    fn in_resolver(&self, script: &Path) -> String {
        let output =
            run("ip", &["netns", "exec", &self.resolver_ns, "sh", script.to_str().expect("UTF-8 path")]);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "resolver script failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

/// Starts `lookout` in namespace `ns`; waits until it announces itself.
fn spawn_lookout(ns: &str, state: &Path, boot: &Path) -> common::LookoutProcess {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_lookout")])
        .args(["--listen", &format!("[::]:{PORT}"), "--no-camera", "--log", "info"])
        .arg("--state-dir")
        .arg(state)
        .arg("--boot-identity-dir")
        .arg(boot);
    let lookout = common::LookoutProcess::spawn(command);
    lookout.wait_for_line("announcing over mDNS");
    lookout
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Dropping the processes kills them (by PID).
        drop(self.lookout.take());
        drop(self.neighbour.take());
        for ns in [&self.camera_ns, &self.resolver_ns] {
            // Anything still running in our namespaces was started by this test.
            let pids = run("ip", &["netns", "pids", ns]);
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = run("kill", &["-KILL", pid]);
            }
            // Deleting a namespace removes its end of the veth pair, and so the pair.
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

/// The resolver side: its own D-Bus and avahi-daemon on tmpfs-backed /run
/// folders (private to this mount namespace), then the queries.
fn resolver_script(dir: &Path, resolver_if: &str, host: &str) -> std::path::PathBuf {
    let conf = dir.join("avahi-daemon.conf");
    std::fs::write(
        &conf,
        format!(
            "[server]\nhost-name=lookout-test-resolver\nuse-ipv4=yes\nuse-ipv6=yes\n\
             allow-interfaces={resolver_if}\nenable-dbus=yes\n\
             [wide-area]\nenable-wide-area=no\n[publish]\ndisable-publishing=yes\n"
        ),
    )
    .unwrap();
    let log = dir.join("avahi.log");
    let script = dir.join("resolve.sh");
    std::fs::write(
        &script,
        format!(
            r#"set -u
mount --make-rprivate /
mount -t tmpfs lookout-test /run/dbus
mkdir -p /run/avahi-daemon
mount -t tmpfs lookout-test /run/avahi-daemon
dbus-daemon --system --nofork --nopidfile 2>/dev/null &
DBUS=$!
for i in $(seq 100); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.1; done
avahi-daemon --no-drop-root --no-chroot --no-rlimits --no-proc-title -f {conf} >{log} 2>&1 &
AVAHI=$!
for i in $(seq 100); do [ -S /run/avahi-daemon/socket ] && break; sleep 0.1; done
sleep 0.5
for try in 1 2 3; do
  A=$(timeout 10 avahi-resolve -4 -n {host} 2>&1) && break
done
echo "A $A"
AAAA=$(timeout 10 avahi-resolve -6 -n {host} 2>&1)
echo "AAAA $AAAA"
timeout 20 avahi-browse --resolve --parsable --terminate --no-db-lookup _https._tcp 2>&1 | sed 's/^/BROWSE /'
kill $AVAHI $DBUS
wait
exit 0
"#,
            conf = conf.display(),
            log = log.display(),
        ),
    )
    .unwrap();
    script
}

#[test]
fn the_camera_is_found_by_name_and_service_from_another_namespace() {
    require_root_and_tools();
    let files = tempfile::tempdir().unwrap();
    let boot = files.path().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    let identity = Identity::generate(DeviceId::generate("").unwrap()).unwrap();
    std::fs::write(boot.join(IDENTITY_FILE_NAME), identity.to_json()).unwrap();
    let host = format!("{}.local", identity.hostname());
    let secret = identity.room_secret().expose_hex();

    let mut lab = Lab::new();
    lab.start_lookout(&files.path().join("state"), &boot);
    let script = resolver_script(files.path(), &lab.resolver_if, &host);
    let output = lab.in_resolver(&script);
    let avahi_log = std::fs::read_to_string(files.path().join("avahi.log")).unwrap_or_default();
    let context = format!("resolver output:\n{output}\navahi-daemon log:\n{avahi_log}");
    assert!(!output.contains(&secret), "the secret went over mDNS:\n{context}");

    // A: the camera's IPv4 address on the shared link.
    let a_line = output.lines().find(|l| l.starts_with("A ")).expect("an A answer line");
    let fields: Vec<&str> = a_line.split_whitespace().collect();
    assert_eq!(fields.get(1), Some(&host.as_str()), "{context}");
    assert_eq!(
        fields.get(2).and_then(|a| a.parse::<IpAddr>().ok()),
        Some(IpAddr::V4(CAMERA_V4)),
        "{context}"
    );

    // AAAA: one of the camera's IPv6 addresses (unique local or link-local).
    let aaaa_line = output.lines().find(|l| l.starts_with("AAAA ")).expect("an AAAA answer line");
    let fields: Vec<&str> = aaaa_line.split_whitespace().collect();
    assert_eq!(fields.get(1), Some(&host.as_str()), "{context}");
    let v6: Ipv6Addr =
        fields.get(2).and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no IPv6 address\n{context}"));
    let camera_v6 = lab.camera_v6_addresses();
    assert!(camera_v6.contains(&CAMERA_V6), "setup: {camera_v6:?}");
    assert!(camera_v6.contains(&v6), "{v6} is not the camera's ({camera_v6:?})\n{context}");

    // The service, resolved, with its TXT record.
    let instance = format!("Lookout\\032{}", identity.device_id());
    let resolved: Vec<Vec<&str>> = output
        .lines()
        .filter_map(|l| l.strip_prefix("BROWSE ="))
        .map(|l| l.split(';').collect::<Vec<_>>())
        .filter(|f| f.get(3) == Some(&instance.as_str()))
        .collect();
    assert!(!resolved.is_empty(), "service {instance} not found\n{context}");
    for fields in &resolved {
        // =;iface;proto;name;type;domain;host;address;port;txt
        assert_eq!(fields.get(4), Some(&"_https._tcp"), "{context}");
        assert_eq!(fields.get(6), Some(&host.as_str()), "{context}");
        assert_eq!(fields.get(8), Some(&PORT.to_string().as_str()), "{context}");
        let address: IpAddr = fields.get(7).and_then(|a| a.parse().ok()).expect("an address");
        assert!(
            address == IpAddr::V4(CAMERA_V4) || camera_v6.iter().any(|v| IpAddr::V6(*v) == address),
            "{context}"
        );
        let txt = fields.get(9).copied().unwrap_or_default();
        for entry in [
            "\"path=/\"".to_owned(),
            format!("\"id={}\"", identity.device_id()),
            format!("\"fp={}\"", identity.certificate_fingerprint_short()),
        ] {
            assert!(txt.contains(&entry), "TXT lacks {entry}: {txt}\n{context}");
        }
    }
}

/// A boot folder holding a fresh identity; returns the identity.
fn provisioned_boot(dir: &Path) -> Identity {
    std::fs::create_dir_all(dir).unwrap();
    let identity = Identity::generate(DeviceId::generate("").unwrap()).unwrap();
    std::fs::write(dir.join(IDENTITY_FILE_NAME), identity.to_json()).unwrap();
    identity
}

/// Polls `/api/info` of the camera in `ns` until `cameras` satisfies `done`.
fn wait_for_cameras(
    lab: &Lab,
    ns: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = lab.api_info(ns);
        let cameras = info["cameras"].as_array().cloned().unwrap_or_default();
        if done(&cameras) {
            return cameras;
        }
        assert!(Instant::now() < deadline, "cameras in {ns} never matched: {info}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn each_camera_lists_the_other_and_forgets_it_when_it_stops() {
    require_root_and_tools();
    let files = tempfile::tempdir().unwrap();
    let first = provisioned_boot(&files.path().join("boot-1"));
    let second = provisioned_boot(&files.path().join("boot-2"));

    let mut lab = Lab::new();
    lab.start_lookout(&files.path().join("state-1"), &files.path().join("boot-1"));
    lab.start_neighbour(&files.path().join("state-2"), &files.path().join("boot-2"));

    let expected = |identity: &Identity| {
        serde_json::json!({
            "device_id": identity.device_id().to_string(),
            "name": format!("Lookout {}", identity.device_id()),
            "url": format!("https://{}.local:{PORT}/", identity.hostname()),
            "fingerprint": identity.certificate_fingerprint_short(),
        })
    };
    let seen_by_first = wait_for_cameras(&lab, &lab.camera_ns, |cameras| !cameras.is_empty());
    assert_eq!(seen_by_first, [expected(&second)], "the first camera lists the second, and not itself");
    let seen_by_second = wait_for_cameras(&lab, &lab.resolver_ns, |cameras| !cameras.is_empty());
    assert_eq!(seen_by_second, [expected(&first)], "the second camera lists the first, and not itself");
    for info in [lab.api_info(&lab.camera_ns), lab.api_info(&lab.resolver_ns)] {
        let text = info.to_string();
        for identity in [&first, &second] {
            assert!(!text.contains(&identity.room_secret().expose_hex()), "a secret in /api/info: {text}");
        }
    }

    // A clean stop says goodbye over mDNS: the first camera forgets the second.
    lab.neighbour.as_mut().expect("the second camera runs").terminate();
    wait_for_cameras(&lab, &lab.camera_ns, |cameras| cameras.is_empty());
}
