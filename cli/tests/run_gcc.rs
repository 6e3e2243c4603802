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
