//! Libraries by name are resolved the way the server's own loader resolves them, so `libc.so.6` is the
//! C library the server runs on; another file with the SONAME of a system library already in the server
//! (a second libc) is refused, naming both files.

use bitbridge::{Arch, Error, LibraryOptions, Server};
use bitbridge_tests::{out_dir, track};

#[test]
fn libc_by_name_is_the_servers_own_libc() {
    let _check = bitbridge_tests::no_server_left();
    for arch in [Arch::X86, Arch::X86_64] {
        let lib = LibraryOptions::new("libc.so.6").arch(arch).open().unwrap();
        track(lib.server());
        let file = lib.file().expect("the server's map names the file").to_path_buf();
        assert_eq!(bitbridge::inspect(&file).unwrap().arch, arch, "{}", file.display());
        // The very file the server was already running on before anything was loaded.
        let fresh = Server::spawn(arch).unwrap();
        track(&fresh);
        assert_eq!(fresh.loaded_file("libc.so.6").as_deref(), Some(file.as_path()));
        assert!(lib.server().path().is_some_and(|p| p.is_file()), "Server::path names the binary");
        eprintln!("{arch}: libc.so.6 is {}", file.display());
    }
}

#[test]
fn a_copy_of_the_servers_libc_is_refused_naming_both_files() {
    let _check = bitbridge_tests::no_server_left();
    for arch in [Arch::X86, Arch::X86_64] {
        let server = Server::spawn(arch).unwrap();
        track(&server);
        let own = server.loaded_file("libc.so.6").expect("the server runs on a libc.so.6");
        let dir = out_dir().join(format!("libc-copy-{arch}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("libc.so.6");
        std::fs::copy(&own, &copy).unwrap();
        let e = server.load(&copy).unwrap_err();
        let Error::DuplicateSystemLibrary { path, soname, loaded } = &e else { panic!("{arch}: {e}") };
        assert_eq!((path, soname.as_str(), loaded), (&copy, "libc.so.6", &own));
        let text = e.to_string();
        assert!(text.contains(&copy.display().to_string()) && text.contains(&own.display().to_string()), "{text}");
        // Through the one-call API too, and the server is still fine.
        let e = LibraryOptions::new(&copy).open().unwrap_err();
        assert!(matches!(e, Error::DuplicateSystemLibrary { .. }), "{e}");
        assert!(server.load(&own).is_ok(), "the server's own file by path is the same library");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
