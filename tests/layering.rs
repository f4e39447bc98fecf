//! The architecture, checked: which modules may import which, and which must never read the
//! clock (sans-IO). A source-level check, so a wrong-way import or a stray `Instant::now()`
//! fails the build's tests instead of waiting for a reviewer.

use std::path::Path;

/// A file's code with test modules and comments cut (they may use the clock and anything).
fn code(path: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn files(dir: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<String> = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".rs"))
        .collect();
    out.sort();
    out
}

const SANS_IO_ROOM: [&str; 9] = [
    "src/room/chat.rs",
    "src/room/presence.rs",
    "src/room/quality.rs",
    "src/room/state.rs",
    "src/room/membership.rs",
    "src/room/tracks.rs",
    "src/room/negotiation.rs",
    "src/room/drive.rs",
    "src/room/peer.rs",
];

#[test]
fn the_room_state_machine_media_and_demux_never_read_the_clock() {
    let mut checked: Vec<String> = files("src/media");
    checked.extend(SANS_IO_ROOM.iter().map(|s| s.to_string()));
    checked.push("src/transport/demux.rs".into());
    for f in checked {
        let c = code(&f);
        for clock in ["Instant::now", "SystemTime::now", "tokio::time"] {
            assert!(
                !c.contains(clock),
                "{f} uses {clock}: it must take `now` from its caller"
            );
        }
    }
}

#[test]
fn imports_point_down_the_layers() {
    for f in files("src/media") {
        let c = code(&f);
        for up in [
            "crate::room",
            "crate::transport",
            "crate::signal",
            "tokio::",
        ] {
            assert!(!c.contains(up), "{f} imports {up}: media/ sits below it");
        }
    }
    for f in files("src/transport") {
        let c = code(&f);
        for up in ["crate::room", "crate::media", "crate::signal"] {
            assert!(
                !c.contains(up),
                "{f} imports {up}: transport/ sits below it"
            );
        }
    }
    // The cluster sits beside the room directory: it places rooms and never speaks the
    // signaling protocol or HTTP; rooms know nothing of the cluster.
    for f in files("src/cluster") {
        let c = code(&f);
        for up in ["crate::signal", "crate::http", "crate::server"] {
            assert!(!c.contains(up), "{f} imports {up}: cluster/ sits below it");
        }
    }
    for f in files("src/room") {
        assert!(
            !code(&f).contains("crate::cluster"),
            "{f} imports crate::cluster: rooms do not know where they are placed"
        );
    }
    // The directory spawns room tasks; a task holds a lease, never the directory.
    for f in ["src/room/task.rs", "src/room/state.rs", "src/room/lease.rs"] {
        assert!(
            !code(f).contains("registry"),
            "{f} reaches up into the registry"
        );
    }
    for f in SANS_IO_ROOM {
        assert!(
            !code(f).contains("super::task"),
            "{f} reaches up into the task"
        );
    }
}
