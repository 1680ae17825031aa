# shellcheck shell=bash disable=SC2016  # the $(...) are make's, not the shell's
# Shared by tests/setup/build.sh and tests/setup/lint.sh (sourced, not run):
# what a directory's Kbuild file builds, read from its object lists so that
# no script names the source files itself.

# The modules DIR/Kbuild builds (obj-m), as NAME.ko.
kbuild_modules() {
    make -s --no-print-directory -C "$1" -f Kbuild \
        --eval='vbhp-list: ; @echo $(patsubst %.o,%.ko,$(obj-m))' vbhp-list
}

# The C sources of those modules, relative to DIR: each module's NAME-y or
# NAME-objs objects, or NAME.c for a single-file module.
kbuild_sources() {
    make -s --no-print-directory -C "$1" -f Kbuild \
        --eval='vbhp-list: ; @echo $(patsubst %.o,%.c,$(foreach o,$(obj-m),$(or $(strip $($(o:.o=-y)) $($(o:.o=-objs))),$(o))))' \
        vbhp-list
}
