/* A plugin with thread-local storage, for dlopen_tls.c: each thread that touches it
 * gets a block of dynamic TLS, which glibc allocates with malloc and frees (after
 * dlclose) from inside __tls_get_addr's update of the thread's DTV. */
__thread char big[100000];
__thread int counter;
int touch(void) {
    big[counter % 100000]++;
    return ++counter;
}
