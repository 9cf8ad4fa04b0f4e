# llhttp as a static library, built from the C sources Debian's node-llhttp
# package installs (no copy of them lives in this repository).
# deps/install.sh unpacks the package under /usr/local/share/herald/node-llhttp when
# apt cannot install it (its nodejs:any dependency) — look there second.
find_path(LLHTTP_SOURCE_DIR llhttp.c PATHS /usr/share/llhttp
          /usr/local/share/herald/node-llhttp/usr/share/llhttp NO_DEFAULT_PATH)
find_path(LLHTTP_INCLUDE_DIR llhttp.h PATHS /usr/share/include/llhttp
          /usr/local/share/herald/node-llhttp/usr/share/include/llhttp NO_DEFAULT_PATH)
if(NOT LLHTTP_SOURCE_DIR OR NOT LLHTTP_INCLUDE_DIR)
  message(FATAL_ERROR "llhttp C sources not found: run deps/install.sh")
endif()

# One copy per build variant, so the sanitizer build instruments the parser too.
function(herald_add_llhttp name)
  add_library(${name} STATIC
    ${LLHTTP_SOURCE_DIR}/api.c ${LLHTTP_SOURCE_DIR}/http.c ${LLHTTP_SOURCE_DIR}/llhttp.c)
  target_include_directories(${name} SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
  # Generated third-party code: do not hold it to our warning flags.
  target_compile_options(${name} PRIVATE -w)
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()
