//! An interpreter's or loader's command line and environment, as a container process passes
//! them: the planner must never panic, and every file it plans is named by an argument, an
//! environment value or a fixed startup path.
#![no_main]
use driftgate_core::engine::indirect::{plan, ExecContext, ExecKind, Lang, Plan};
use libfuzzer_sys::fuzz_target;

struct Ctx {
    env: Vec<(String, Vec<u8>)>,
    tty: bool,
}

impl ExecContext for Ctx {
    fn env(&mut self, name: &str) -> Result<Vec<Vec<u8>>, String> {
        Ok(self.env.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect())
    }
    fn home(&mut self) -> Result<Vec<Vec<u8>>, String> {
        Ok(vec![b"/root".to_vec()])
    }
    fn stdin_is_terminal(&mut self) -> bool {
        self.tty
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let kinds = [
        ExecKind::Loader,
        ExecKind::MultiCall,
        ExecKind::Interpreter(Lang::Shell),
        ExecKind::Interpreter(Lang::Python),
        ExecKind::Interpreter(Lang::Perl),
        ExecKind::Interpreter(Lang::Ruby),
        ExecKind::Interpreter(Lang::Node),
        ExecKind::Interpreter(Lang::Php),
        ExecKind::Interpreter(Lang::Other),
    ];
    let kind = kinds[(sel as usize) % kinds.len()];
    // Arguments split at NUL; the environment after a 0xff byte, one `NAME=value` per NUL.
    let (args, env) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let mut argv: Vec<Vec<u8>> = args.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    if argv.is_empty() {
        argv.push(b"sh".to_vec());
    }
    let env = env
        .split(|&b| b == 0)
        .filter_map(|e| {
            let eq = e.iter().position(|&b| b == b'=')?;
            Some((String::from_utf8_lossy(&e[..eq]).into_owned(), e[eq + 1..].to_vec()))
        })
        .collect();
    let mut ctx = Ctx { env, tty: sel & 0x80 != 0 };
    let file = if sel & 0x40 != 0 { &b"bash"[..] } else { b"dash" };
    if let Plan::Run(codes) = plan(kind, file, &argv, sel & 0x20 != 0, &mut ctx) {
        for c in codes {
            assert!(c.arg.is_none_or(|a| a < argv.len()), "an argument index within the list");
        }
    }
});
