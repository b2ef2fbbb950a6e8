# Shell helpers sourced by every guest script (/etc/vfio-ts/lib.sh in the initramfs).

# pci_find VENDOR DEVICE [N]: prints the address (0000:00:03.0) of the Nth (default 1st) PCI
# function with these IDs, written as in sysfs (0x1234 0x11e8). Status 1 if there is none.
pci_find() {
  _n=${3:-1}
  for _d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$_d/vendor")" = "$1" ] && [ "$(cat "$_d/device")" = "$2" ]; then
      _n=$((_n - 1))
      if [ "$_n" = 0 ]; then
        basename "$_d"
        return 0
      fi
    fi
  done
  return 1
}

# pci_group ADDR: prints the IOMMU group number of a PCI function.
pci_group() {
  basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"
}

# vfio_bind ADDR: binds a PCI function to vfio-pci (driver_override, unbind, drivers_probe;
# Documentation/driver-api/vfio.rst) and prints its IOMMU group number.
vfio_bind() {
  _d=/sys/bus/pci/devices/$1
  echo vfio-pci >"$_d/driver_override" || return 1
  if [ -e "$_d/driver" ]; then echo "$1" >"$_d/driver/unbind" || return 1; fi
  echo "$1" >/sys/bus/pci/drivers_probe || return 1
  [ "$(basename "$(readlink "$_d/driver")")" = vfio-pci ] || return 1
  pci_group "$1"
}
