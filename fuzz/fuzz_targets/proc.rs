//! What a container's processes control in /proc (command names, arguments, the pending
//! exec's registers line), the daemon's own fdinfo, ELF headers of executed files, and the
//! raw-bytes encoding of names in findings.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = driftgate_sys::proc::parse_status(data);
    let _ = driftgate_sys::proc::parse_exec_regs(&text);
    let _ = driftgate_sys::proc::parse_ns_link(data);
    let _ = driftgate_sys::fanotify::parse_fdinfo_sdevs(&text);
    let _ = driftgate_sys::fanotify::parse_fdinfo_mnt_ids(&text);
    let _ = driftgate_core::engine::elf::parse(data);
    let (shown, raw) = driftgate_core::finding::text_and_raw(data);
    match raw {
        // Bytes that are not UTF-8 come back exactly from their raw form.
        Some(r) => assert_eq!(driftgate_core::finding::decode_raw(&r).as_deref(), Some(data)),
        None => assert_eq!(shown.as_bytes(), data),
    }
    let p = driftgate_core::util::printable(data);
    assert!(!p.contains('\n') && !p.contains('\u{1b}'), "{p:?}");
    let args: Vec<Vec<u8>> = data.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    let _ = driftgate_core::engine::indirect::loader_target(&args);
    let _ = driftgate_core::engine::indirect::multicall_applet(&args);
});
