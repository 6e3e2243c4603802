//! `vrift man`: man pages generated from the parser's own definitions (`clap_mangen`), so
//! they never drift from `--help`.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::args::{Cli, ManArgs};
use crate::Outcome;

pub fn run(a: &ManArgs) -> Result<Outcome> {
    let mut root = <Cli as clap::CommandFactory>::command();
    root.build();
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_page(&root, &dir.join("vrift.1"))?;
        let mut n = 1;
        // Every command and nested command (`vrift-remote-gc.1`), as git names its pages.
        let mut todo: Vec<(String, clap::Command)> = root
            .get_subcommands()
            .map(|c| (format!("vrift-{}", c.get_name()), c.clone()))
            .collect();
        while let Some((name, cmd)) = todo.pop() {
            if cmd.get_name() == "help" {
                continue;
            }
            for sub in cmd.get_subcommands() {
                todo.push((format!("{name}-{}", sub.get_name()), sub.clone()));
            }
            write_page(
                &cmd.clone().name(name.clone()),
                &dir.join(format!("{name}.1")),
            )?;
            n += 1;
        }
        crate::note!("wrote {n} man pages into {}", dir.display());
        return Ok(Outcome::Ok);
    }
    let page = match &a.command {
        None => root,
        Some(c) => match root.find_subcommand(c) {
            Some(sub) => sub.clone().name(format!("vrift-{c}")),
            None => bail!("no command {c:?} (see `vrift --help`)"),
        },
    };
    match render(&page, &mut std::io::stdout().lock()) {
        // `vrift man | head`: the reader is done, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Outcome::Ok),
        r => {
            r.context("cannot write the man page to stdout")?;
            Ok(Outcome::Ok)
        }
    }
}

fn render(cmd: &clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd.clone())
        .title(cmd.get_name().to_uppercase())
        .section("1")
        .manual("Velo Rift")
        .source(format!("vrift {}", env!("CARGO_PKG_VERSION")))
        .render(out)
}

fn write_page(cmd: &clap::Command, path: &Path) -> Result<()> {
    let mut buf = Vec::new();
    render(cmd, &mut buf)?;
    let tmp = path.with_extension("1.tmp");
    std::fs::write(&tmp, &buf).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
