# Devices of the reference host (configure --without-default-devices: only
# these and what they select are built; QEMU's Kconfig adds the rest a board
# needs).  The tests and the bench start every guest with -nodefaults and
# use no other device.  A device missing here fails at QEMU's start with
# "'NAME' is not a valid device model name".
#
# Boards: q35 for the guests, pc (i440FX) for the qtest device tests.
CONFIG_Q35=y
CONFIG_I440FX=y
# The balloon itself, on PCI.
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_BALLOON=y
# The image tier's disks (-drive if=virtio).
CONFIG_VIRTIO_BLK=y
# pcie-root-port: a q35 slot that can hot-unplug the balloon (device_del).
CONFIG_PCIE_PORT=y
