//! `/proc/<pid>/status`: who a process is (ids, namespaces' pids, capabilities).

use super::dir::read_proc;

/// Identity of the process doing the exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    pub tgid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub name: Vec<u8>,
    /// The thread id in the innermost PID namespace (last `NSpid` field).
    pub ns_pid: Option<i32>,
    /// How many PID namespaces the thread is in (the fields of `NSpid`): a parent with fewer
    /// is in an outer namespace, outside the container.
    pub ns_depth: usize,
    /// The process id in the innermost PID namespace (last `NStgid` field).
    pub ns_tgid: Option<i32>,
    /// Effective user and group (second `Uid` and `Gid` fields).
    pub euid: u32,
    pub egid: u32,
    /// `CapEff` and `CapBnd`.
    pub cap_eff: u64,
    pub cap_bnd: u64,
    /// `NoNewPrivs`.
    pub no_new_privs: bool,
}

impl ProcStatus {
    /// What decides the privilege an exec raises it to.
    pub fn caller(&self) -> driftgate_core::privilege::Caller {
        driftgate_core::privilege::Caller {
            euid: self.euid,
            egid: self.egid,
            cap_eff: self.cap_eff,
            cap_bnd: self.cap_bnd,
            no_new_privs: self.no_new_privs,
        }
    }
}

/// Parses `/proc/<pid>/status`.
pub fn parse_status(text: &[u8]) -> ProcStatus {
    let mut st = ProcStatus::default();
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (k, v) = (&line[..colon], trim(&line[colon + 1..]));
        match k {
            b"Name" => st.name = unescape_status_name(v),
            b"Tgid" => st.tgid = parse_num(v).unwrap_or(0) as i32,
            b"PPid" => st.ppid = parse_num(v).unwrap_or(0) as i32,
            b"NSpid" | b"NStgid" => {
                let last = v
                    .split(|b| b.is_ascii_whitespace())
                    .rfind(|x| !x.is_empty())
                    .and_then(parse_num)
                    .map(|n| n as i32);
                if k == b"NSpid" {
                    st.ns_pid = last;
                    st.ns_depth = v.split(|b| b.is_ascii_whitespace()).filter(|x| !x.is_empty()).count();
                } else {
                    st.ns_tgid = last;
                }
            }
            b"Uid" | b"Gid" => {
                let mut ids = v.split(|b| b.is_ascii_whitespace()).filter(|x| !x.is_empty());
                let real = ids.next().and_then(parse_num).unwrap_or(u64::MAX) as u32;
                let effective = ids.next().and_then(parse_num).unwrap_or(u64::MAX) as u32;
                if k == b"Uid" {
                    (st.uid, st.euid) = (real, effective);
                } else {
                    st.egid = effective;
                }
            }
            b"CapEff" | b"CapBnd" => {
                let mask =
                    std::str::from_utf8(v).ok().and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0);
                if k == b"CapEff" {
                    st.cap_eff = mask;
                } else {
                    st.cap_bnd = mask;
                }
            }
            b"NoNewPrivs" => st.no_new_privs = v == b"1",
            _ => {}
        }
    }
    st
}

pub fn read_status(tid: i32) -> Option<ProcStatus> {
    read_proc(&format!("{tid}/status")).map(|t| parse_status(&t))
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let e = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(s, |i| i + 1);
    &v[s..e.max(s)]
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// `/proc/<pid>/status` escapes `\n` and `\\` in the Name field.
fn unescape_status_name(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && i + 1 < v.len() {
            match v[i + 1] {
                b'n' => out.push(b'\n'),
                b'\\' => out.push(b'\\'),
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_parsed() {
        let text = b"Name:\tbad\\nname\nUmask:\t0022\nState:\tD (disk sleep)\nTgid:\t4242\n\
                     Ngid:\t0\nPid:\t4243\nPPid:\t4000\nTracerPid:\t0\nUid:\t1000\t0\t1000\t1000\n\
                     Gid:\t1000\t50\t1000\t1000\nNStgid:\t4242\t7\nNSpid:\t4243\t8\n\
                     CapEff:\t0000000000002000\nCapBnd:\t000001ffffffffff\nNoNewPrivs:\t1\n";
        let st = parse_status(text);
        assert_eq!(
            st,
            ProcStatus {
                tgid: 4242,
                ppid: 4000,
                uid: 1000,
                name: b"bad\nname".to_vec(),
                ns_pid: Some(8),
                ns_depth: 2,
                ns_tgid: Some(7),
                euid: 0,
                egid: 50,
                cap_eff: 1 << 13,
                cap_bnd: (1 << 41) - 1,
                no_new_privs: true,
            }
        );
    }
}
