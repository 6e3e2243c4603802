//! gcc compiling against virtual headers and a virtual source file; the output binary is
//! written to a real directory and runs.

use crate::run_support;

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

/// `execve` between `vfork` and `exec` (what `make`, `tcsh` and older spawn code do): the
/// shim rewrites the program and its environment there without a single `malloc`/`free`
/// (the child shares the parent's memory; a lock held by another thread of the parent would
/// hang it). The program counts allocator calls with its own `malloc`, which the shim's
/// allocations go through too, and execs a virtual script with an environment lacking
/// `LD_PRELOAD`, so the shim must build a new one.
#[test]
fn exec_after_vfork_does_not_allocate() {
    let env = Env::new();
    write_exec(
        &env.path("proj/bin/hello.sh"),
        "#!/bin/sh\necho \"hello $1 from $0\"\ncat \"$(dirname \"$0\")/../data.txt\"\n",
    );
    write(&env.path("proj/data.txt"), "virtual data\n");
    write(
        &env.path("vfork.c"),
        r#"#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
static volatile int armed;
static volatile long calls;
void *malloc(size_t n) { if (armed) calls++; return __libc_malloc(n); }
void free(void *p) { if (armed && p) calls++; __libc_free(p); }
void *calloc(size_t a, size_t b) { if (armed) calls++; return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { if (armed) calls++; return __libc_realloc(p, n); }
void *aligned_alloc(size_t a, size_t n) { if (armed) calls++; return __libc_memalign(a, n); }
void *memalign(size_t a, size_t n) { if (armed) calls++; return __libc_memalign(a, n); }
int posix_memalign(void **r, size_t a, size_t n) {
    if (armed) calls++;
    void *p = __libc_memalign(a, n);
    if (!p) return 12;
    *r = p;
    return 0;
}
int main(int argc, char **argv) {
    char *envp[] = {"PATH=/usr/bin:/bin", "VFORK_TEST=1", NULL};
    fflush(stdout);
    armed = 1;
    pid_t pid = vfork();
    if (pid == 0) {
        execve(argv[1], argv + 1, envp);
        _exit(127);
    }
    armed = 0;
    int st = 0;
    waitpid(pid, &st, 0);
    printf("allocator calls between vfork and exec: %ld\n", calls);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
"#,
    );
    let o = std::process::Command::new("gcc")
        .args(["-O1", "-rdynamic", "-o"])
        .arg(env.path("vfork"))
        .arg(env.path("vfork.c"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = env.ingest_and_remove("proj", "proj.vrm");
    let script = env.path("proj/bin/hello.sh");
    let out = env.run_ok(&[&m], &["./vfork", script.to_str().unwrap(), "world"]);
    assert_eq!(
        out,
        format!(
            "hello world from {}\nvirtual data\nallocator calls between vfork and exec: 0\n",
            script.display()
        )
    );
}
