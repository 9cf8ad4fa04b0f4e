# llhttp as a static library, built from the C sources Debian's node-llhttp
# package installs (no copy of them lives in this repository).
set(LLHTTP_SOURCE_DIR /usr/share/llhttp CACHE PATH "llhttp C sources")
set(LLHTTP_INCLUDE_DIR /usr/share/include/llhttp CACHE PATH "llhttp header")
if(NOT EXISTS ${LLHTTP_SOURCE_DIR}/llhttp.c OR NOT EXISTS ${LLHTTP_INCLUDE_DIR}/llhttp.h)
  message(FATAL_ERROR "llhttp sources not found in ${LLHTTP_SOURCE_DIR}: run deps/install.sh")
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
