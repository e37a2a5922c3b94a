//! The `wsgate` command line. The server itself arrives with the next milestone; until then
//! the binary says so instead of pretending.

fn main() {
    eprintln!("wsgate: the server is not built yet; the library's authentication core is (see README.md)");
    std::process::exit(2);
}
