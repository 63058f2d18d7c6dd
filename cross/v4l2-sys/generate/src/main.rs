//! `v4l2-sys-generate TARGET OUT`: V4L2 bindings of `<linux/videodev2.h>` for the clang
//! target triple TARGET, written to OUT, with the default options crates.io's
//! `v4l2-sys-mit` 0.3.0 build script uses.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, target, out] = args.as_slice() else {
        eprintln!("usage: v4l2-sys-generate TARGET OUT");
        std::process::exit(2);
    };
    let bindings = bindgen::Builder::default()
        .header_contents("wrapper.h", "#include <linux/videodev2.h>\n")
        .clang_arg(format!("--target={target}"))
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("bindgen for {target}: {e}");
            std::process::exit(1);
        });
    bindings.write_to_file(out).unwrap_or_else(|e| {
        eprintln!("{out}: {e}");
        std::process::exit(1);
    });
}
