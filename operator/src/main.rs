fn main() {
    print!("{}", fleetlet_crds::generate::crds_yaml());
}
