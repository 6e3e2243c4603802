//! gcc compiling against virtual headers and a virtual source file; the output binary is
//! written to a real directory and runs.

mod run_support;

use run_support::*;

#[test]
fn gcc_compiles_with_a_virtual_include_dir() {
    let env = Env::new();
    write(
        &env.path("inc/vlib/config.h"),
        "#pragma once\n#include \"version.h\"\n#define GREETING \"hi from a virtual header\"\n",
    );
    write(&env.path("inc/vlib/version.h"), "#define VLIB_VERSION 3\n");
    write(
        &env.path("inc/src/main.c"),
        "#include <stdio.h>\n#include <vlib/config.h>\nint main(void) { printf(\"%s v%d\\n\", GREETING, VLIB_VERSION); return 0; }\n",
    );
    let m = env.ingest_and_remove("inc", "inc.vrm");
    std::fs::create_dir_all(env.path("out")).unwrap();
    let root = env.root();
    let abs_inc = format!("-I{}/inc", root.display());
    // Relative and absolute include paths, a virtual source file, dependency output.
    env.run_ok(
        &[&m],
        &[
            "gcc",
            "-Iinc",
            "-MD",
            "-MF",
            "out/main.d",
            "-o",
            "out/prog",
            "inc/src/main.c",
        ],
    );
    env.run_ok(
        &[&m],
        &["gcc", &abs_inc, "-c", "-o", "out/main.o", "inc/src/main.c"],
    );
    let out = std::process::Command::new(env.path("out/prog"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi from a virtual header v3\n"
    );
    let deps = std::fs::read_to_string(env.path("out/main.d")).unwrap();
    assert!(
        deps.contains("inc/vlib/config.h") && deps.contains("inc/vlib/version.h"),
        "{deps}"
    );
    assert!(env.path("out/main.o").is_file());
}

/// A program that execs a child with a bare `LD_PRELOAD` entry (no `=`) in its environment:
/// the child keeps the shim and reads the view (it once lost it to a slice panic).
#[test]
fn a_child_started_with_a_bare_ld_preload_entry_keeps_the_view() {
    let env = Env::new();
    write(&env.path("v/data.txt"), "virtual content\n");
    let m = env.ingest_and_remove("v", "v.vrm");
    write(
        &env.path("src/spawn.c"),
        "#include <unistd.h>\n\
         int main(int c, char **v) {\n\
           char *argv[] = {\"cat\", v[1], 0};\n\
           char *envp[] = {\"LD_PRELOAD\", \"PATH=/usr/bin:/bin\", 0};\n\
           execve(\"/bin/cat\", argv, envp);\n\
           return 127;\n\
         }\n",
    );
    compile_c(&env.path("src/spawn.c"), &env.path("spawn"));
    let out = env.run_ok(&[&m], &["./spawn", "v/data.txt"]);
    assert_eq!(out, "virtual content\n");
}
