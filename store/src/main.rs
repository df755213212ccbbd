fn main() {
    eprintln!("paxos-kv: not built yet");
    std::process::exit(255);
}
