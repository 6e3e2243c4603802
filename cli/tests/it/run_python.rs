//! Python on a virtual virtualenv: `python -m venv`, a package written into its
//! site-packages, the venv ingested and deleted, then imported through the venv's own
//! interpreter under `vrift run`.

use crate::run_support;

use std::process::Command;

use run_support::*;

#[test]
fn python_imports_from_a_virtual_venv() {
    let env = Env::new();
    let venv = env.path("venv");
    let st = Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(st.success(), "python3 -m venv failed (apt: python3-venv)");
    let site = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .unwrap();
    let site = String::from_utf8(site.stdout).unwrap().trim().to_string();
    let site = std::path::PathBuf::from(site);
    write(
        &site.join("vpkg/__init__.py"),
        "from .core import answer\nNAME = 'vpkg'\n",
    );
    write(&site.join("vpkg/core.py"), "def answer():\n    return 42\n");
    write(&site.join("vpkg/data.json"), "{\"k\": [1, 2]}\n");
    write(&site.join("single_mod.py"), "VALUE = 'single'\n");
    write(&env.path("script.py"), "import vpkg, single_mod, json, os, importlib.resources as r\n\
print(vpkg.NAME, vpkg.answer(), single_mod.VALUE)\n\
print(json.loads(r.files('vpkg').joinpath('data.json').read_text())['k'])\n\
print(vpkg.__file__)\n\
print(sorted(n for n in os.listdir(os.path.dirname(vpkg.__file__)) if not n.startswith('__pycache__')))\n");
    let m = env.ingest_and_remove("venv", "venv.vrm");
    let out = env.run_ok(&[&m], &["venv/bin/python", "script.py"]);
    let want = format!(
        "vpkg 42 single\n[1, 2]\n{}\n['__init__.py', 'core.py', 'data.json']\n",
        site.join("vpkg/__init__.py").display()
    );
    assert_eq!(out, want);
    // The venv interpreter knows it is in a venv (pyvenv.cfg is virtual too).
    let out = env.run_ok(
        &[&m],
        &[
            "venv/bin/python",
            "-c",
            "import sys; print(sys.prefix != sys.base_prefix)",
        ],
    );
    assert_eq!(out, "True\n");
}
