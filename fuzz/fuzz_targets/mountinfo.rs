//! /proc/self/mountinfo: mount points and overlay options are chosen by whoever mounts (a
//! runtime, a container with CAP_SYS_ADMIN in its namespace, a user namespace).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = driftgate_core::config::Config::defaults();
    for e in driftgate::container::mountinfo::parse(data) {
        let _ = driftgate::container::classify(&e, &cfg);
        let _ = driftgate::container::mounts::plan(&e, 1);
    }
});
